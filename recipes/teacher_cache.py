"""What the frozen teacher says about a row, computed once per row (ARCHITECTURE.md §7.2).

The teacher (the source Llama: the frozen backbone on its own tokens, `hat.teacher`) and the byte targets derived
from its next-token distributions depend on nothing but the row's text. On a corpus trained for several epochs (the
demo passes its corpus about ten times) they are the same every time a row comes back, and they are most of a
teacher-guided step's cost while the decoder reads the teacher's states: the teacher pass is the whole backbone
forward over the row's tokens, and the byte targets need the 49K- or 128K-way head and a float64 cumulative
distribution at every token. `TeacherCache` keeps them per row, on the CPU, up to a size in bytes; rows beyond it
are computed again each time they come back.

    cache = TeacherCache(max_bytes=2 * 2**30)
    entry = cache.get(row_key(input_ids_of_row))      # None on a miss
    cache.put(key, TeacherRow(last=..., layer=..., target_positions=..., byte_targets=...))

Under ZeRO-3 every process must run the teacher pass together (each holds a shard of the backbone), so a process
cannot skip it on a hit while another misses: the recipe refuses the cache there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def row_key(input_ids: torch.Tensor) -> bytes:
    """The key of one row: its bytes, (T,) -> bytes. The teacher's tokens and the alignment are functions of them."""
    return input_ids.to(torch.int16).cpu().numpy().tobytes()


@dataclass
class TeacherRow:
    """The teacher's view of one row, trimmed to its length.

    Attributes:
        last (`(N, D)`): the teacher's last-block state at each of the row's N tokens.
        layer (`(N, D)` or None): its state after the first k blocks (the encoder loss's target).
        target_positions (`(P,)` long or None): the row's byte positions with a distillation target.
        byte_targets (`(P, 256)` or None): the teacher's next-byte distribution at each of them.
    """

    last: torch.Tensor
    layer: torch.Tensor | None = None
    target_positions: torch.Tensor | None = None
    byte_targets: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.last, self.layer, self.target_positions,
                                                          self.byte_targets) if t is not None)

    def to(self, device, copy: bool = False) -> TeacherRow:
        """On `device`; `copy`: in storage of its own (a row cut from a batch's tensor would keep the whole of it)."""
        return TeacherRow(*(None if t is None else t.detach().to(device, copy=copy) for t in
                            (self.last, self.layer, self.target_positions, self.byte_targets)))


class TeacherCache:
    """Rows' `TeacherRow`s on the CPU, up to `max_bytes` (0: keep nothing). Full: new rows are not kept."""

    def __init__(self, max_bytes: int = 0):
        if max_bytes < 0:
            raise ValueError(f"the teacher cache's size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes, self.nbytes = max_bytes, 0
        self.rows: dict[bytes, TeacherRow] = {}
        self.hits = self.misses = 0

    def get(self, key: bytes) -> TeacherRow | None:
        row = self.rows.get(key)
        if row is None:
            self.misses += 1
        else:
            self.hits += 1
        return row

    def put(self, key: bytes, row: TeacherRow) -> None:
        size = row.nbytes
        if key in self.rows or self.nbytes + size > self.max_bytes:
            return
        self.rows[key] = row.to("cpu", copy=True)
        self.nbytes += size
