"""safetensors reading and writing: every header checked before anything is written; the kernel copy and its
fallback through memory give the same shards."""

from __future__ import annotations

import os
import struct

import pytest
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
