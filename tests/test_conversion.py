"""Llama -> HAT conversion: the table, the sizes, the streaming CLI, every bad input, bounded memory, the GGUF path.

    PYTHONPATH=. .venv/bin/python -m pytest tests/test_conversion.py            # 1-2 min on 2 CPU cores
    PYTHONPATH=. .venv/bin/python -m pytest tests/test_conversion.py -m "not slow"   # without the GGUF and memory tests
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hat.convert.__main__ import DEFAULT_OUTPUT, main
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from hat import HATConfig, HATForCausalLM
from hat.conversion import (
    DROPPED,
    LLAMA_TO_HAT,
    ConversionError,
    check_gguf,
    default_source,
    hat_config_from_llama,
    hat_from_llama,
    hat_key,
    init_new_modules,
    load_llama_gguf,
    parameter_counts,
    read_gguf_metadata,
)
from hat.model.layout import additive_mask, causal_mask
from hat.model.parts import NEW_PARTS

ROOT = Path(__file__).resolve().parent.parent
LLAMA31_ROPE = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
}


def tiny_llama_config(**kwargs) -> LlamaConfig:
    """Llama 3.1-shaped: llama3 RoPE scaling, GQA 4:1, 2 layers, width 64."""
    base = dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_parameters=dict(LLAMA31_ROPE),
        tie_word_embeddings=False,
    )
    return LlamaConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="module")
def llama_dir(tiny_llama, tmp_path_factory) -> Path:
    """The tiny Llama saved by transformers in several shards with an index."""
    path = tmp_path_factory.mktemp("llama") / "src"
    tiny_llama.save_pretrained(path, max_shard_size="60KB")
    return path


@pytest.fixture
def src(llama_dir, tmp_path) -> Path:
    """A private copy of the sharded source (tests may damage it) at tmp_path/src."""
    return Path(shutil.copytree(llama_dir, tmp_path / "src"))


@pytest.fixture(scope="module")
def converted(llama_dir, tmp_path_factory) -> Path:
    """`convert-llama` run on the sharded tiny Llama, with small output shards."""
    out = tmp_path_factory.mktemp("converted") / "hat"
    assert main(["--input", str(llama_dir), "--output", str(out), "--max-shard-size", "100KB"]) == 0
    return out


def layer_inputs(config: LlamaConfig, rotary, T: int = 7):
    """Hidden states, positions, rotary (cos, sin) and an additive causal mask for one decoder layer."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, T, config.hidden_size, generator=g)  # (B, T, D)
    positions = torch.arange(T).expand(2, T)  # (B, T)
    mask = additive_mask(causal_mask(torch.ones(2, T, dtype=torch.bool)), hidden.dtype)  # (B, 1, T, T)
    return hidden, positions, rotary(hidden, positions), mask


def assert_backbone_bit_identical(hat: HATForCausalLM, llama: LlamaForCausalLM) -> None:
    hidden, positions, (cos, sin), mask = layer_inputs(llama.config, llama.model.rotary_emb)
    hat_cos, hat_sin = hat.model.backbone.rotary_emb(hidden, positions)
    assert torch.equal(hat_cos, cos) and torch.equal(hat_sin, sin)
    assert len(hat.model.backbone.layers) == len(llama.model.layers)
    with torch.no_grad():
        for i, (ours, theirs) in enumerate(zip(hat.model.backbone.layers, llama.model.layers)):
            kwargs = dict(attention_mask=mask, position_ids=positions, position_embeddings=(cos, sin))
            assert torch.equal(ours(hidden, **kwargs), theirs(hidden, **kwargs)), f"backbone layer {i} differs"


def assert_nothing_left(parent: Path, expected: set[str]) -> None:
    """No output and no temporary dir beside it: only `expected` entries remain in `parent`."""
    assert set(os.listdir(parent)) == expected


# ----------------------------------------------------------------------------------------------------------
# Table, sizes, initialisation
# ----------------------------------------------------------------------------------------------------------
def test_table_maps_every_llama_key(tiny_llama):
    for key in tiny_llama.state_dict():
        name = hat_key(key)
        assert (name is None) == (key in DROPPED)
        if name is not None:
            assert name.startswith("backbone.layers.") and name.split(".")[2] == key.split(".")[2]
    assert hat_key("model.layers.17.mlp.down_proj.weight") == "backbone.layers.17.mlp.down_proj.weight"
    assert all(k.count("{}") == 1 and v.count("{}") == 1 for k, v in LLAMA_TO_HAT.items())
    with pytest.raises(ConversionError, match="rotary_emb.inv_freq"):
        hat_key("model.layers.0.self_attn.rotary_emb.inv_freq")


# Meta-Llama-3.1-8B's config.json, as a dict (the CLI reads config.json as such).
LLAMA31_8B_CONFIG_JSON = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.0.dev0", "use_cache": True,
    "vocab_size": 128256,
}


def test_release_8b_and_auto_sizes():
    llama_8b = LLAMA31_8B_CONFIG_JSON
    for preset in ("release-8b", "auto"):  # auto's 3% rule lands on the release's own sizes for 8B
        config = hat_config_from_llama(llama_8b, preset)
        assert sum(parameter_counts(config).values()) == 7_192_495_104
        assert config.to_dict()["encoder_config"] == HATConfig.release_8b().to_dict()["encoder_config"]
        assert config.backbone_config.rope_parameters == LLAMA31_ROPE and config.backbone_config.vocab_size == 0

    smollm2 = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, rope_theta=100000.0, tie_word_embeddings=True,
    )
    config = hat_config_from_llama(smollm2)
    enc = config.encoder_config
    assert (enc.hidden_size, enc.num_attention_heads, enc.head_dim, enc.intermediate_size) == (128, 2, 64, 352)
    assert (enc.num_hidden_layers, config.decoder_config.num_hidden_layers, enc.sliding_window) == (6, 4, 768)
    counts = parameter_counts(config)
    new = sum(counts[k] for k in NEW_PARTS)
    assert counts["backbone"] == 106_202_880 and 0.02 < new / (new + counts["backbone"]) < 0.04
    with pytest.raises(ConversionError, match="do not fit a backbone of width 576"):
        hat_config_from_llama(smollm2, "release-8b")  # byte head size 128 does not divide 576
    config = hat_config_from_llama(smollm2, hidden_size=192, decoder_layers=2)
    assert (config.encoder_config.num_attention_heads, config.decoder_config.num_hidden_layers) == (3, 2)
    with pytest.raises(ConversionError, match="unknown size override"):
        hat_config_from_llama(smollm2, hidden=3)
    with pytest.raises(ConversionError, match="unknown preset"):
        hat_config_from_llama(smollm2, "huge")


def test_init_new_modules_is_seeded_and_leaves_backbone(tiny_llama):
    a, b, c = (hat_from_llama(tiny_llama, seed=s) for s in (0, 0, 1))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    for name in sa:
        if name.startswith("model.backbone."):
            assert torch.equal(sa[name], sc[name])
        elif "norm" in name:
            assert torch.equal(sa[name], torch.ones_like(sa[name]))
        else:
            assert torch.equal(sa[name], sb[name]) and not torch.equal(sa[name], sc[name]), name
    std = a.config.backbone_config.initializer_range
    assert abs(sa["model.encoder.embedding_layer.weight"].std().item() - std) < 0.2 * std
    assert abs(sa["model.encoder_connector.latent_query"].std().item() - 1.0) < 0.3
    init_new_modules(c, seed=0)
    assert all(torch.equal(v, sa[k]) for k, v in c.state_dict().items())


# ----------------------------------------------------------------------------------------------------------
# The CLI on a sharded Llama 3.1-shaped checkpoint
# ----------------------------------------------------------------------------------------------------------
def test_convert_sharded_llama_bit_identical(tiny_llama, llama_dir, converted):
    assert len(list(llama_dir.glob("model-*.safetensors"))) >= 3
    files = {p.name for p in converted.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "README.md"} <= files
    assert len([f for f in files if f.startswith("model-")]) >= 2
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left

    raw = json.loads((converted / "config.json").read_text())
    assert raw["model_type"] == "hierarchical_autoregressive_transformer"
    assert raw["backbone_config"]["vocab_size"] == 0 and raw["backbone_config"]["rope_scaling"]["rope_type"] == "llama3"
    assert raw["backbone_config"]["num_key_value_heads"] == 1
    assert json.loads((converted / "generation_config.json").read_text())["eos_token_id"] == 192
    card = (converted / "README.md").read_text()
    assert str(llama_dir) in card and "untrained" in card and "recipes/" in card

    hat, info = HATForCausalLM.from_pretrained(converted, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_backbone_bit_identical(hat.eval(), tiny_llama)
    # The streamed new modules are the in-memory conversion's (one init function, one seed).
    reference = hat_from_llama(tiny_llama, seed=0).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in hat.state_dict().items())


def test_converted_model_trains_one_step(converted):
    model = HATForCausalLM.from_pretrained(converted).train()
    words = ["Hello,", " byte", " world", "!"]
    ids = torch.tensor([list("".join(words).encode())])  # (1, T)
    word_lengths = [[len(w.encode()) for w in words]]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(ids, labels=ids, word_lengths=word_lengths).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    for name in ("model.encoder.embedding_layer.weight", "model.backbone.layers.0.mlp.down_proj.weight",
                 "model.encoder_connector.latent_query", "lm_head.weight"):
        assert name in changed


def test_convert_bfloat16_and_overrides(tiny_llama, src, tmp_path):
    out = tmp_path / "out"
    argv = ["--input", str(src), "--output", str(out), "--dtype", "bfloat16", "--preset", "release-8b",
            "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--encoder-layers", "1",
            "--decoder-layers", "2", "--sliding-window", "16", "--seed", "3"]
    assert main(argv) == 0
    config = HATConfig.from_pretrained(out)
    enc, dec = config.encoder_config, config.decoder_config
    assert (enc.hidden_size, enc.num_attention_heads, enc.intermediate_size, enc.num_hidden_layers) == (32, 2, 64, 1)
    assert (dec.num_hidden_layers, dec.sliding_window) == (2, 16)
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    reference = hat_from_llama(copy.deepcopy(tiny_llama).to(torch.bfloat16), "release-8b", seed=3, hidden_size=32,
                               num_heads=2, intermediate_size=64, encoder_layers=1, decoder_layers=2, sliding_window=16)
    reference = {k.removeprefix("model."): v for k, v in reference.state_dict().items()}
    assert set(index) == set(reference)
    for name, file in index.items():
        with safe_open(out / file, "pt") as f:
            tensor = f.get_tensor(name)
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, reference[name]), name


def test_single_file_checkpoint(tiny_llama, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "src")  # one model.safetensors, no index
    assert main(["--input", str(tmp_path / "src"), "--output", str(tmp_path / "out")]) == 0
    hat, info = HATForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert_backbone_bit_identical(hat.eval(), tiny_llama)


def test_copy_through_memory_when_kernel_copy_fails(tiny_llama, llama_dir, tmp_path, monkeypatch):
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


def test_default_input_and_output(monkeypatch):
    import hat.conversion

    calls = []
    monkeypatch.setattr(hat.conversion, "convert_gguf", lambda *a, **k: calls.append((a, k)) or "summary")
    assert main([]) == 0
    (source, output), kwargs = calls[0]
    assert source == default_source() and output == Path(DEFAULT_OUTPUT)
    assert kwargs["preset"] == "auto" and kwargs["dtype"] == "auto" and not kwargs["overwrite"]


# ----------------------------------------------------------------------------------------------------------
# Bad input: a clear error, nothing left behind
# ----------------------------------------------------------------------------------------------------------
def run_failing(argv: list[str], capsys, match: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "convert-llama: error:" in err and match in err, err


@pytest.mark.parametrize("model_type, arch", [("mistral", "MistralForCausalLM"), ("gpt2", "GPT2LMHeadModel")])
def test_not_llama(src, tmp_path, capsys, model_type, arch):
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": model_type, "architectures": [arch]}))
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "not a Llama checkpoint")
    assert_nothing_left(tmp_path, {"src"})


def test_missing_shard(src, tmp_path, capsys):
    (src / "model-00002-of-" f"{len(list(src.glob('model-*'))):05d}.safetensors").unlink()
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "are missing: ['model-00002-of-")
    assert_nothing_left(tmp_path, {"src"})


def last_shard(src: Path) -> Path:
    return sorted(src.glob("model-*.safetensors"))[-1]


def test_truncated_safetensors(src, tmp_path, capsys):
    shard = last_shard(src)
    os.truncate(shard, shard.stat().st_size - 100)
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "truncated safetensors file")
    assert_nothing_left(tmp_path, {"src"})


@pytest.mark.parametrize("offset, garbage", [(8, b"\xff" * 16), (0, struct.pack("<Q", 2**40))])
def test_corrupt_safetensors_header(src, tmp_path, capsys, offset, garbage):
    with open(last_shard(src), "r+b") as f:
        f.seek(offset)
        f.write(garbage)
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "corrupt safetensors header")
    assert_nothing_left(tmp_path, {"src"})


def test_unmapped_source_tensor(src, tmp_path, capsys):
    shard = last_shard(src)
    tensors = {}
    with safe_open(shard, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file({**tensors, "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}, shard)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.self_attn.rotary_emb.inv_freq"] = shard.name
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "not in LLAMA_TO_HAT")
    assert_nothing_left(tmp_path, {"src"})


def test_output_not_empty(src, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("keep me")
    run_failing(["--input", str(src), "--output", str(out)], capsys, "exists and is not empty")
    assert os.listdir(out) == ["stale.txt"]
    assert_nothing_left(tmp_path, {"src", "out"})

    assert main(["--input", str(src), "--output", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()
    assert_nothing_left(tmp_path, {"src", "out"})


def test_not_enough_disk(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "not enough free disk space")
    assert_nothing_left(tmp_path, {"src"})


def write_gguf_header(path: Path, metadata: dict[str, str], n_tensors: int = 0) -> None:
    """A GGUF v3 header with string metadata only."""
    data = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(metadata))
    for key, value in metadata.items():
        k, v = key.encode(), value.encode()
        data += struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v
    path.write_bytes(data)


def gguf_without_sizes(path: Path) -> None:
    """A real llama GGUF (gguf's own writer) with one tensor and no size metadata."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
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
    ("truncated", "truncated GGUF header"),
])
def test_gguf_without_metadata(tmp_path, capsys, kind, match):
    path = tmp_path / "model.gguf"
    if kind == "garbage":
        path.write_bytes(b"this is not a gguf file at all")
    elif kind == "no-architecture":
        write_gguf_header(path, {"general.name": "mystery"}, n_tensors=1)
    elif kind == "not-llama":
        write_gguf_header(path, {"general.architecture": "gpt2"}, n_tensors=1)
    elif kind == "no-sizes":
        gguf_without_sizes(path)
    else:
        write_gguf_header(path, {"general.architecture": "llama"})
        os.truncate(path, path.stat().st_size - 3)
    run_failing(["--input", str(path), "--output", str(tmp_path / "out")], capsys, match)
    assert_nothing_left(tmp_path, {"model.gguf"})


# ----------------------------------------------------------------------------------------------------------
# Peak memory: a ~430 MB checkpoint in 12 shards converts in a fraction of its size
# ----------------------------------------------------------------------------------------------------------
PEAK_RSS_CHILD = textwrap.dedent("""
    import json, sys
    import hat.convert.__main__, hat.conversion, hat.tokenizer, safetensors.torch  # everything the CLI imports
    imports = hat.conversion.peak_rss_bytes()  # VmHWM: the child's own, not inherited from pytest
    assert hat.convert.__main__.main(sys.argv[1:]) == 0
    print(json.dumps({"imports": imports, "peak": hat.conversion.peak_rss_bytes()}))
""")


def peak_rss_of(argv: list[str]) -> tuple[int, int]:
    """(peak RSS after the imports, peak RSS at the end) of `convert-llama argv` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_CHILD, *argv], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["imports"], result["peak"]


@pytest.mark.slow
def test_peak_memory_is_bounded(tmp_path):
    config = tiny_llama_config(vocab_size=1024, hidden_size=1024, intermediate_size=2048, num_hidden_layers=12,
                               num_attention_heads=8, num_key_value_heads=2)
    src = tmp_path / "src"
    src.mkdir()
    config.save_pretrained(src)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(config).state_dict().items()}
    n_shards, weight_map, total = 12, {}, 0
    for s in range(n_shards):  # layer s in shard s; embeddings in the first, head and final norm in the last
        keys = [k for k in shapes if k.startswith(f"model.layers.{s}.")]
        keys += [k for k in shapes if k.startswith("model.embed")] if s == 0 else []
        keys += [k for k in shapes if k in ("lm_head.weight", "model.norm.weight")] if s == n_shards - 1 else []
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        tensors = {k: torch.full(shapes[k], 0.01 * (s + 1)) for k in keys}
        save_file(tensors, src / name, metadata={"format": "pt"})
        total += sum(t.numel() * 4 for t in tensors.values())
        weight_map.update(dict.fromkeys(keys, name))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    largest_shard = max(p.stat().st_size for p in src.glob("model-*"))

    baseline, peak = peak_rss_of(["--input", str(src), "--output", str(tmp_path / "out"), "--max-shard-size", "50MB"])
    used = peak - baseline
    print(f"checkpoint {total / 2**20:.0f} MiB, largest shard {largest_shard / 2**20:.0f} MiB, "
          f"peak RSS {peak / 2**20:.0f} MiB = imports {baseline / 2**20:.0f} MiB + {used / 2**20:.0f} MiB")
    assert total > 400e6
    assert used < 0.5 * total
    assert used < largest_shard + 50e6  # less than a converter that buffers one source and one output shard
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) >= 10


# ----------------------------------------------------------------------------------------------------------
# The embedded SmolLM2-135M-Instruct GGUF
# ----------------------------------------------------------------------------------------------------------
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
    assert (enc.hidden_size, enc.num_attention_heads) == (128, 2)
    assert_backbone_bit_identical(hat, llama)
