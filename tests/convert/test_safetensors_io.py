"""safetensors reading and writing: every header checked before anything is written; the kernel copy and its
fallback through memory give the same shards."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from tests.helpers.source_tokenizer import byte_level_bpe
from llama_fixtures import (  # noqa: F401 (fixtures)
    assert_backbone_bit_identical,
    assert_nothing_left,
    last_shard,
    llama_dir,
    run_failing,
    src,
    tiny_llama,
)

from hat import HATForCausalLM
from hat.convert.cli import main


def test_copy_through_memory_when_kernel_copy_fails(tiny_llama, llama_dir, tmp_path, monkeypatch):  # noqa: F811
    """Same-dtype tensors are copied with `os.copy_file_range`; where it fails midway the conversion undoes the
    partial copy and goes through memory, with the same result."""
    real = os.copy_file_range
    calls = []

    def flaky(src_fd, dst_fd, count, offset_src=None, *args):
        calls.append(count)
        if len(calls) % 2:  # copy a little, then fail
            real(src_fd, dst_fd, min(count, 100), offset_src)
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", flaky)
    assert main(["--input", str(llama_dir), "--output", str(tmp_path / "out")]) == 0
    assert calls
    hat = HATForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert_backbone_bit_identical(hat, tiny_llama)


def test_missing_shard(src, tmp_path, capsys):  # noqa: F811
    (src / "model-00002-of-" f"{len(list(src.glob('model-*'))):05d}.safetensors").unlink()
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "are missing: ['model-00002-of-")
    assert_nothing_left(tmp_path, {"src"})


def test_truncated_safetensors(src, tmp_path, capsys):  # noqa: F811
    shard = last_shard(src)
    os.truncate(shard, shard.stat().st_size - 100)
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "truncated safetensors file")
    assert_nothing_left(tmp_path, {"src"})


@pytest.mark.parametrize("offset, garbage", [(8, b"\xff" * 16), (0, struct.pack("<Q", 2**40))])
def test_corrupt_safetensors_header(src, tmp_path, capsys, offset, garbage):  # noqa: F811
    with open(last_shard(src), "r+b") as f:
        f.seek(offset)
        f.write(garbage)
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "corrupt safetensors header")
    assert_nothing_left(tmp_path, {"src"})


# ----------------------------------------------------------------------------------------------------------
# Headers as strict as the safetensors library's
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def single(tiny_llama, tmp_path) -> Path:  # noqa: F811
    """The tiny Llama as one model.safetensors (every tensor in one file) at tmp_path/src."""
    tiny_llama.save_pretrained(tmp_path / "src")
    byte_level_bpe().save_pretrained(tmp_path / "src")
    return tmp_path / "src"


def rewrite_header(path: Path, edit, extra_data: bytes = b"") -> None:
    """Replace the JSON header of a safetensors file by `edit(entries)` (a list of (name, entry) pairs, so that
    duplicates can be written); the data stays as it is, plus `extra_data` at the end."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    entries = edit(list(header.items()))
    text = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in entries) + "}").encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :] + extra_data)


def set_entry(name: str, **fields):
    def edit(entries):
        return [(k, {**v, **fields} if k == name else v) for k, v in entries]
    return edit


def entry(path: Path, name: str) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])[name]


K, V = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"


def by_offset(path: Path) -> list[str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = {k: v for k, v in json.loads(raw[8 : 8 + n]).items() if k != "__metadata__"}
    return sorted(header, key=lambda k: header[k]["data_offsets"])


CORRUPTIONS = {
    # The reported case: v_proj's offsets point at k_proj's bytes (same shape under GQA), so v_proj would be k_proj.
    "v_proj reads k_proj": (lambda f: rewrite_header(f, set_entry(V, data_offsets=entry(f, K)["data_offsets"])),
                            "overlap (bytes"),
    "gap": (lambda f: rewrite_header(f, lambda es: [(k, v) for k, v in es if k != by_offset(f)[0]]),
            "bytes before tensor"),
    "bytes after the last tensor": (lambda f: rewrite_header(f, lambda es: es, extra_data=b"\0" * 64),
                                    "64 bytes after the last tensor belong to no tensor"),
    "past the end": (lambda f: rewrite_header(f, set_entry(by_offset(f)[-1], data_offsets=[
        entry(f, by_offset(f)[-1])["data_offsets"][0] + 64, entry(f, by_offset(f)[-1])["data_offsets"][1] + 64])),
        "truncated safetensors file (or a corrupt header): tensor"),
    "dtype does not fit the offsets": (lambda f: rewrite_header(f, set_entry(K, dtype="F16")),
                                       "F16 has data_offsets"),
    "shape does not fit the offsets": (lambda f: rewrite_header(f, set_entry(K, shape=[16, 32])),
                                       "(16, 32) F32 has data_offsets"),
    "negative dimension": (lambda f: rewrite_header(f, set_entry(K, shape=[-16, -64])),
                           f"corrupt safetensors header entry {K!r}"),
    "fractional offset": (lambda f: rewrite_header(f, set_entry(K, data_offsets=[0.5, 4096.5])),
                          f"corrupt safetensors header entry {K!r}"),
    "duplicate name": (lambda f: rewrite_header(f, lambda es: es + [es[-1]]), "appears twice"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_header_refused_like_the_safetensors_library(single, tmp_path, capsys, kind):
    from safetensors import safe_open

    corrupt, match = CORRUPTIONS[kind]
    corrupt(single / "model.safetensors")
    run_failing(["--input", str(single), "--output", str(tmp_path / "out")], capsys, match)
    assert_nothing_left(tmp_path, {"src"})
    if kind != "duplicate name":  # JSON with a repeated key: the library keeps one of the two, we refuse
        with pytest.raises(Exception):
            with safe_open(single / "model.safetensors", "pt") as f:
                [f.get_tensor(k) for k in f.keys()]


def test_header_check_accepts_what_the_library_writes(tiny_llama, tmp_path):  # noqa: F811
    """Zero-size tensors, every dtype the conversion meets, metadata: the checks refuse nothing valid."""
    import torch
    from safetensors.torch import save_file

    from hat.convert.safetensors_io import read_safetensors_header

    tensors = {"empty": torch.zeros(0, 4), "scalar": torch.tensor(1.0), "b": torch.ones(3, dtype=torch.bfloat16),
               "h": torch.ones(2, 2, dtype=torch.float16), "i": torch.arange(5)}
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    header = read_safetensors_header(tmp_path / "x.safetensors")
    assert {k: (v.dtype, v.shape) for k, v in header.items()} == {k: (t.dtype, tuple(t.shape)) for k, t in
                                                                  tensors.items()}
