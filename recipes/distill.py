"""The losses of teacher-guided stage 1 (ARCHITECTURE.md §7.2), as pure tensor functions.

    trie = SpellingTrie(token_spellings(tokenizer))
    targets = trie.byte_targets(teacher_logits, rows_t, nodes)      # (P, 256) teacher next-byte distributions
    kl = byte_distillation(byte_logits[p_rows, p_cols], targets)
    enc = state_matching(hat_states_k, teacher_states_k, mask)      # pooled words after k frozen blocks

**Next-byte targets from a next-token distribution.** The teacher predicts token t from the state at token t-1.
Every byte of token t is a HAT prediction target: the HAT predicts byte q from the bytes before it. Under the
teacher, the next byte after the prefix `s = token_t[:j]` is distributed as the total probability of the tokens
that extend `s` by that byte, renormalised:

    P(b | s) = sum_{v : spelling(v) starts with s + b} p(v)  /  sum_{v : spelling(v) starts with s, longer than s} p(v)

For j = 0 that is the first-byte marginal. Sorted by spelling, the tokens that start with a prefix form one
contiguous range, so each sum is a difference of two entries of the cumulative distribution in sorted order:
`SpellingTrie` stores, for every prefix of every token, the ranges of its one-byte extensions. Tokens that equal the
prefix exactly (the token could end here) are left out: what follows them is the next token, which the teacher has
not predicted at this position.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import torch
import torch.nn.functional as F


class SpellingTrie:
    """Every prefix of every token spelling, with the sorted-vocabulary ranges of its one-byte extensions.

    Args:
        spellings (`list[bytes]`): the bytes of each token id (`b""` for tokens that never stand for text).

    Attributes:
        order (`torch.LongTensor` of shape `(V,)`): token ids sorted by spelling.
        prefix_offsets (`torch.LongTensor` of shape `(V + 1,)`), prefix_nodes (`(sum of lengths,)`): the node of
            `spelling(v)[:j]` is `prefix_nodes[prefix_offsets[v] + j]` for `0 <= j < len(spelling(v))`.
        child_offsets (`(n_nodes + 1,)`), child_bytes, child_lo, child_hi (`(n_children,)`): node n's extensions
            are `child_offsets[n]:child_offsets[n + 1]`; extension `b` covers sorted positions `[lo, hi)`.
    """

    def __init__(self, spellings: Sequence[bytes]):
        self.vocab_size = len(spellings)
        order = sorted(range(len(spellings)), key=lambda i: spellings[i])
        ranked = [spellings[i] for i in order]
        self.order = torch.tensor(order, dtype=torch.long)
        nodes: dict[bytes, int] = {}
        child_offsets, child_bytes, child_lo, child_hi = [0], [], [], []
        prefix_offsets, prefix_nodes = [0], []
        for spelling in spellings:
            for j in range(len(spelling)):
                prefix = spelling[:j]
                node = nodes.get(prefix)
                if node is None:
                    node = nodes[prefix] = len(nodes)
                    for b, lo, hi in self._extensions(ranked, prefix):
                        child_bytes.append(b)
                        child_lo.append(lo)
                        child_hi.append(hi)
                    child_offsets.append(len(child_bytes))
                prefix_nodes.append(node)
            prefix_offsets.append(len(prefix_nodes))
        self.num_nodes = len(nodes)
        self.prefix_offsets = torch.tensor(prefix_offsets, dtype=torch.long)
        self.prefix_nodes = torch.tensor(prefix_nodes, dtype=torch.long)
        self.child_offsets = torch.tensor(child_offsets, dtype=torch.long)
        self.child_bytes = torch.tensor(child_bytes, dtype=torch.long)
        self.child_lo = torch.tensor(child_lo, dtype=torch.long)
        self.child_hi = torch.tensor(child_hi, dtype=torch.long)

    @staticmethod
    def _extensions(ranked: list[bytes], prefix: bytes) -> list[tuple[int, int, int]]:
        """(byte, lo, hi) for every byte b such that some spelling starts with prefix + b: sorted positions [lo, hi)."""
        lo, hi = bisect.bisect_left(ranked, prefix), len(ranked)
        successor = prefix.rstrip(b"\xff")  # the least string above every string that starts with `prefix`
        if successor:
            hi = bisect.bisect_left(ranked, successor[:-1] + bytes([successor[-1] + 1]), lo)
        out, i, n = [], lo, len(prefix)
        while i < hi and len(ranked[i]) == n:  # the prefix itself (it sorts first): left out
            i += 1
        while i < hi:
            b = ranked[i][n]
            j = bisect.bisect_left(ranked, prefix + bytes([b + 1]), i, hi) if b < 255 else hi
            out.append((b, i, j))
            i = j
        return out

    def node(self, token_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The node of `spelling(token)[:offset]`, elementwise; -1 where the offset is not inside the spelling."""
        lengths = self.prefix_offsets[token_ids + 1] - self.prefix_offsets[token_ids]
        inside = (offsets >= 0) & (offsets < lengths)
        flat = (self.prefix_offsets[token_ids] + offsets.clamp(min=0)).clamp(max=max(0, len(self.prefix_nodes) - 1))
        return torch.where(inside, self.prefix_nodes[flat], torch.full_like(token_ids, -1))

    def byte_targets(self, teacher_logits: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                     chunk_rows: int = 512) -> torch.Tensor:
        """Teacher next-byte distributions.

        Args:
            teacher_logits (`torch.Tensor` of shape `(R, V)`): next-token logits of R teacher positions.
            rows (`torch.LongTensor` of shape `(P,)`): for each target, the teacher position that predicts its token.
            nodes (`torch.LongTensor` of shape `(P,)`): the prefix node of each target (`node(...)`, all >= 0).
            chunk_rows (`int`): teacher positions whose (R, V) float64 cumulative distribution is held at once (at
                Llama 3's 128K vocabulary, 512 rows are 0.5 GB).

        Returns:
            `torch.Tensor` of shape `(P, 256)`, float32: rows sum to 1 (all zeros where no extension has mass).
        """
        device = teacher_logits.device
        order, offsets = self.order.to(device), self.child_offsets.to(device)
        child_bytes, child_lo, child_hi = (t.to(device) for t in (self.child_bytes, self.child_lo, self.child_hi))
        out = torch.zeros(len(nodes), 256, dtype=torch.float64, device=device)
        for first in range(0, teacher_logits.shape[0], chunk_rows):
            take = ((rows >= first) & (rows < first + chunk_rows)).nonzero(as_tuple=True)[0]  # (P',) targets here
            if not len(take):
                continue
            probs = torch.softmax(teacher_logits[first : first + chunk_rows, order].float(), dim=-1)  # sorted
            # cum[:, i] = mass of sorted positions < i. Summed in float64: a range's mass is a difference of two
            # entries near 1, which a float32 sum would round to 0 for ranges below ~1e-7.
            cum = F.pad(probs.double().cumsum(-1), (1, 0))  # (R', V + 1)
            starts, counts = offsets[nodes[take]], offsets[nodes[take] + 1] - offsets[nodes[take]]  # (P',)
            target = torch.repeat_interleave(torch.arange(len(take), device=device), counts)  # (M,) per extension
            child = torch.arange(int(counts.sum()), device=device) - torch.repeat_interleave(counts.cumsum(0) - counts,
                                                                                             counts)
            child = child + starts[target]  # (M,) index into the extension arrays
            row = rows[take][target] - first
            mass = cum[row, child_hi[child]] - cum[row, child_lo[child]]  # (M,)
            out.index_put_((take[target], child_bytes[child]), mass.clamp(min=0), accumulate=True)
        return (out / out.sum(-1, keepdim=True).clamp(min=1e-300)).float()


def byte_distillation(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) over targets: student_logits (P, 256), targets (P, 256) -> scalar.

    Zero exactly where the student's next-byte distribution equals the teacher's.
    """
    if not len(targets):
        return student_logits.sum() * 0.0
    log_student = F.log_softmax(student_logits.float(), dim=-1)
    kl = torch.xlogy(targets, targets) - targets * log_student  # (P, 256); xlogy: 0 log 0 = 0
    return kl.sum(-1).mean()


def state_matching(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of ||student - teacher||_2 / sqrt(d): student, teacher (..., d), mask (...) bool."""
    diff = (student.float() - teacher.float()).pow(2).mean(-1).sqrt()  # (...)
    return (diff * mask).sum() / mask.sum().clamp(min=1)


def chunk_distillation(student_logprob: torch.Tensor, teacher_logprob: torch.Tensor, mask: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Approximate likelihood matching of aligned chunks: the binarised KL between the teacher's and the student's
    probability of each chunk (Minixhofer et al.); inputs (...) log-probs, mask (...) bool -> scalar.

    Zero exactly where both assign a chunk the same probability.
    """
    lt = (teacher_logprob.float() / temperature).clamp(max=-1e-6)
    ls = (student_logprob.float() / temperature).clamp(max=-1e-6)
    kl = lt.exp() * (lt - ls) + (-torch.expm1(lt)) * (torch.log(-torch.expm1(lt)) - torch.log(-torch.expm1(ls)))
    return (kl * mask).sum() / mask.sum().clamp(min=1)
