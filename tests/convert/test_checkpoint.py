"""Streaming conversion (`convert_checkpoint`, through the CLI): parity with the source Llama and the in-memory
conversion, dtypes and overrides, a clear error for bad input with nothing left behind, bounded memory.

    PYTHONPATH=. .venv/bin/python -m pytest tests/convert            # 1-2 min on 2 CPU cores
    PYTHONPATH=. .venv/bin/python -m pytest tests/convert -m "not slow"
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from tests.helpers.source_tokenizer import byte_level_bpe
from llama_fixtures import (  # noqa: F401 (fixtures)
    ROOT,
    assert_backbone_bit_identical,
    assert_nothing_left,
    converted,
    last_shard,
    llama_dir,
    run_failing,
    src,
    tiny_llama,
    tiny_llama_config,
)
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from hat import HATConfig, HATForCausalLM
from hat.convert.cli import main
from hat.convert.in_memory import hat_from_llama


def test_convert_sharded_llama_bit_identical(tiny_llama, llama_dir, converted):  # noqa: F811
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


def test_converted_model_trains_one_step(converted):  # noqa: F811
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


def test_convert_bfloat16_and_overrides(tiny_llama, src, tmp_path):  # noqa: F811
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


def test_single_file_checkpoint(tiny_llama, tmp_path):  # noqa: F811
    tiny_llama.save_pretrained(tmp_path / "src")  # one model.safetensors, no index
    byte_level_bpe().save_pretrained(tmp_path / "src")
    assert main(["--input", str(tmp_path / "src"), "--output", str(tmp_path / "out")]) == 0
    hat, info = HATForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert_backbone_bit_identical(hat.eval(), tiny_llama)


@pytest.mark.parametrize("model_type, arch", [("mistral", "MistralForCausalLM"), ("gpt2", "GPT2LMHeadModel")])
def test_not_llama(src, tmp_path, capsys, model_type, arch):  # noqa: F811
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": model_type, "architectures": [arch]}))
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "not a Llama checkpoint")
    assert_nothing_left(tmp_path, {"src"})


def test_unmapped_source_tensor(src, tmp_path, capsys):  # noqa: F811
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


PEAK_RSS_CHILD = textwrap.dedent("""
    import json, sys
    import hat.convert.card, hat.convert.checkpoint, hat.convert.cli, safetensors.torch  # all the CLI imports
    imports = hat.convert.card.peak_rss_bytes()  # VmHWM: the child's own, not inherited from pytest
    assert hat.convert.cli.main(sys.argv[1:]) == 0
    print(json.dumps({"imports": imports, "peak": hat.convert.card.peak_rss_bytes()}))
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
    byte_level_bpe().save_pretrained(src)
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
    out = tmp_path / "out"
    new_bytes = 0  # the new modules (encoder, connectors, decoder, head), which the converter builds whole
    for shard in out.glob("model-*.safetensors"):
        with safe_open(shard, "pt") as f:
            new_bytes += sum(math.prod(f.get_slice(k).get_shape()) * 4 for k in f.keys() if not k.startswith("backbone."))
    print(f"new modules {new_bytes / 2**20:.0f} MiB")
    assert total > 400e6
    assert used < 0.5 * total
    # One tensor buffer (at most a shard), the new modules and their float32 copy for the RMS dummy forward
    # (ARCHITECTURE.md §6.2), and allocator slack: less than a converter that buffers one source and one output shard
    assert used < largest_shard + 2 * new_bytes + 40e6
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) >= 10


# ----------------------------------------------------------------------------------------------------------
# Every written weight finite (on by default), shard sizes that make sense
# ----------------------------------------------------------------------------------------------------------
def damage(src, name: str, value: float) -> str:
    """Put `value` into one element of source tensor `name`; returns the shard's file name."""
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    shard = src / index[name]
    with safe_open(shard, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[name][3, 5] = value
    save_file(tensors, shard, metadata={"format": "pt"})
    return index[name]


@pytest.mark.parametrize("dtype, why", [  # copied by the kernel and read back / cast in memory
    ("auto", "in float32: the source checkpoint is damaged (--no-check-finite converts it anyway)"),
    ("bfloat16", "in bfloat16: cast from float32: values beyond bfloat16's range become inf, or the source is damaged"),
])
def test_nan_weight_is_named(src, tmp_path, capsys, dtype, why):  # noqa: F811
    name = "model.layers.1.mlp.up_proj.weight"
    shard = damage(src, name, float("nan"))
    argv = ["--input", str(src), "--output", str(tmp_path / "out"), "--dtype", dtype]
    err = run_failing(argv, capsys, f"{src / shard}: tensor {name!r} (-> 'backbone.layers.1.mlp.up_proj.weight') "
                                    "has 1 NaN or infinite values of 8,192")
    assert why in err and "removed the unfinished" in err
    assert_nothing_left(tmp_path, {"src"})

    assert main([*argv, "--no-check-finite"]) == 0
    hat = HATForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.isnan(hat.model.backbone.layers[1].mlp.up_proj.weight[3, 5])


def test_overflow_in_the_cast_is_named(src, tmp_path, capsys):  # noqa: F811
    name = "model.layers.0.self_attn.o_proj.weight"
    damage(src, name, 1e30)
    err = run_failing(["--input", str(src), "--output", str(tmp_path / "out"), "--dtype", "float16"], capsys,
                      f"tensor {name!r} (-> 'backbone.layers.0.self_attn.o_proj.weight') has 1 NaN or infinite")
    assert "in float16: cast from float32: values beyond float16's range become inf" in err
    assert_nothing_left(tmp_path, {"src"})


@pytest.mark.parametrize("size, match", [
    ("0", "--max-shard-size '0' is not a positive size"),
    ("0.4", "--max-shard-size '0.4' is not a positive size"),
    ("-5GB", "cannot read size '-5GB'"),
    ("5XB", "cannot read size '5XB'"),
    ("1", "--max-shard-size 1 (1 B) is smaller than the largest tensor, 'encoder.embedding_layer.weight'"),
    ("10KB", "(10.0 KB) is smaller than the largest tensor, 'encoder.embedding_layer.weight' (65.5 KB in "
             "float32); pass at least 65.5 KB"),
])
def test_nonsense_shard_size_refused(src, tmp_path, capsys, size, match):  # noqa: F811
    run_failing(["--input", str(src), "--output", str(tmp_path / "out"), f"--max-shard-size={size}"], capsys, match)
    assert_nothing_left(tmp_path, {"src"})
