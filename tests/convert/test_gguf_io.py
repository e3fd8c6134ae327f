"""GGUF through `gguf.GGUFReader`: metadata checks with a clear error, and the embedded SmolLM2-135M GGUF."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from llama_fixtures import assert_backbone_bit_identical, assert_nothing_left, run_failing

from hat.convert.gguf_io import check_gguf, default_source, load_llama_gguf, read_gguf_metadata
from hat.convert.in_memory import hat_from_llama


def write_gguf_header(path: Path, metadata: dict[str, str], n_tensors: int = 0) -> None:
    """A GGUF v3 header with string metadata only."""
    data = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(metadata))
    for key, value in metadata.items():
        k, v = key.encode(), value.encode()
        data += struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v
    path.write_bytes(data)


def gguf_without_sizes(path: Path, arch: str = "llama") -> None:
    """A real GGUF (gguf's own writer) with one tensor and no size metadata."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("kind, match", [
    ("garbage", "not a GGUF file"),
    ("no-architecture", "without the general.architecture metadata"),
    ("not-llama", "GGUF architecture is 'gpt2'"),
    ("no-sizes", "lacks the metadata a Llama needs: ['llama.block_count'"),
    ("truncated", "truncated or corrupt GGUF file"),
    ("no-tensor-info", "truncated or corrupt GGUF file"),
])
def test_gguf_without_metadata(tmp_path, capsys, kind, match):
    path = tmp_path / "model.gguf"
    if kind == "garbage":
        path.write_bytes(b"this is not a gguf file at all")
    elif kind == "no-architecture":
        write_gguf_header(path, {"general.name": "mystery"})
    elif kind == "not-llama":
        gguf_without_sizes(path, "gpt2")
    elif kind == "no-sizes":
        gguf_without_sizes(path)
    elif kind == "truncated":
        gguf_without_sizes(path)
        os.truncate(path, path.stat().st_size - 3)
    else:  # the header promises a tensor whose description is not there
        write_gguf_header(path, {"general.architecture": "llama"}, n_tensors=1)
    run_failing(["--input", str(path), "--output", str(tmp_path / "out")], capsys, match)
    assert_nothing_left(tmp_path, {"model.gguf"})


def test_default_gguf_metadata():
    metadata = check_gguf(default_source())
    assert metadata["general.architecture"] == "llama" and metadata["llama.block_count"] == 30
    assert read_gguf_metadata(default_source())["llama.embedding_length"] == 576


@pytest.mark.slow
def test_smollm2_gguf_converts_bit_identical():
    llama = load_llama_gguf(default_source())  # ~30 s: transformers' GGUF reader
    assert llama.config.hidden_size == 576 and llama.config.num_key_value_heads == 3
    assert llama.lm_head.weight is llama.model.embed_tokens.weight  # tied in SmolLM2
    hat = hat_from_llama(llama).eval()
    enc = hat.config.encoder_config
    assert (enc.hidden_size, enc.num_attention_heads) == (256, 4)  # the auto preset's width floor
    assert_backbone_bit_identical(hat, llama)


def small_llama_gguf(path: Path) -> bytes:
    """A real llama GGUF (gguf's own writer) with the size metadata and two float32 tensors; returns its bytes."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def overwrite_first_dim(data: bytes, tensor: str) -> bytes:
    """The tensor info is name, n_dims (u32), dims (u64 each): the first dimension becomes 2**64 - 1."""
    at = data.index(tensor.encode()) + len(tensor) + 4
    return data[:at] + struct.pack("<Q", 2**64 - 1) + data[at + 8 :]


@pytest.mark.parametrize("kind", ["truncated to half", "last bytes cut", "tensor dims overwritten",
                                  "magic, version, then noise"])
def test_corrupt_gguf(tmp_path, capsys, kind):
    path = tmp_path / "model.gguf"
    data = small_llama_gguf(path)
    assert check_gguf(path)["GGUF.tensor_count"] == 2  # the intact file is fine
    if kind == "truncated to half":
        data = data[: len(data) // 2]
    elif kind == "last bytes cut":
        data = data[:-100]
    elif kind == "tensor dims overwritten":
        data = overwrite_first_dim(data, "blk.0.attn_q.weight")
    else:
        data = b"GGUF" + struct.pack("<I", 3) + np.random.default_rng(0).bytes(3000)
    path.write_bytes(data)
    err = run_failing(["--input", str(path), "--output", str(tmp_path / "out")], capsys,
                      f"{path}: truncated or corrupt GGUF file ({len(data):,} bytes; gguf: ")
    assert err.count("\n") == 1
    assert_nothing_left(tmp_path, {"model.gguf"})


@pytest.mark.slow
def test_truncated_default_gguf(tmp_path, capsys):
    """The real SmolLM2 GGUF cut in half: refused from the metadata read, before transformers loads anything."""
    path = tmp_path / "model.gguf"
    with open(default_source(), "rb") as f:
        path.write_bytes(f.read(default_source().stat().st_size // 2))
    run_failing(["--input", str(path), "--output", str(tmp_path / "out")], capsys,
                f"{path}: truncated or corrupt GGUF file")
    assert_nothing_left(tmp_path, {"model.gguf"})
