"""Streaming conversion vs a plain copy: wall time and peak memory on a generated multi-GB Llama checkpoint.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_conversion.py [--layers 10] [--shards 12] [--repeats 2] [--workdir /tmp]

Generates a Llama-shaped float32 checkpoint (width 2048, GQA 32/8, SwiGLU 8192, vocab 16384; 10 layers ~2.7 GB)
in `--shards` safetensors shards with an index, reads it once so that every run starts from the page cache, then
times, each in its own subprocess, `shutil.copy` of the checkpoint's files and `convert_checkpoint` (preset auto)
to float32 (same dtype: tensors are copied by the kernel) with two output shard sizes and to bfloat16 (cast: through
memory), interleaved, `--repeats` times. Every run ends with `os.sync()` so the data is
on disk. Reports the best wall time and the largest peak RSS (whole process, and above the same process's imports)
against the largest source shard, and writes the table into BENCHMARKS.md between `<!-- conversion:start -->` and
`<!-- conversion:end -->`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, write_section  # noqa: E402

CHILD = textwrap.dedent("""
    import json, os, shutil, sys, time
    from pathlib import Path
    task, src, dst, shard, dtype = sys.argv[1:6]
    if task == "convert":
        from hat.convert.checkpoint import convert_checkpoint

    def peak_rss():  # VmHWM, not ru_maxrss: that one is inherited from the (large) parent across fork/exec
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024

    imported = peak_rss()
    start = time.perf_counter()
    if task == "copy":
        os.mkdir(dst)
        for path in sorted(Path(src).iterdir()):
            shutil.copy(path, Path(dst) / path.name)
    else:
        convert_checkpoint(src, dst, dtype=dtype, max_shard_size=shard, progress=False)
    os.sync()
    seconds = time.perf_counter() - start
    peak = peak_rss()
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "imported_rss": imported}))
""")


def make_checkpoint(path: Path, layers: int, shards: int) -> int:
    """A float32 Llama checkpoint of `layers` layers in `shards` files; returns its tensor bytes."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=16384, hidden_size=2048, intermediate_size=8192, num_hidden_layers=layers, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131072, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_theta": 500000.0},
    )
    path.mkdir()
    config.save_pretrained(path)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    keys = list(shapes)
    per_shard = -(-len(keys) // shards)
    weight_map, total = {}, 0
    for s in range(shards):
        chunk = keys[s * per_shard : (s + 1) * per_shard]
        if not chunk:
            break
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {k: torch.full(shapes[k], 0.001 * (s + 1)) for k in chunk}
        save_file(tensors, str(path / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(chunk, name))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


def run_child(task: str, src: Path, dst: Path, shard: str = "", dtype: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, task, str(src), str(dst), shard, dtype], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-conversion-", dir=args.workdir))
    try:
        params_per_layer = 2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192
        expected = 4 * (args.layers * params_per_layer + 2 * 16384 * 2048)
        free = shutil.disk_usage(work).free
        if free < 3.2 * expected:  # source + copy + output
            sys.exit(f"needs ~{3.2 * expected / 1e9:.1f} GB free in {work}, has {free / 1e9:.1f} GB")
        src = work / "src"
        total = make_checkpoint(src, args.layers, args.shards)
        files = sorted(src.glob("model-*.safetensors"))
        largest = max(p.stat().st_size for p in files)
        for path in files:  # warm the page cache: both contenders read from memory
            with open(path, "rb") as f:
                while f.read(2**26):
                    pass
        print(f"checkpoint: {total / 1e9:.2f} GB in {len(files)} shards, largest {largest / 1e6:.0f} MB", flush=True)
        load = os.getloadavg()[0]

        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # interleaved, so that disk write-back hits every contender alike
            runs.setdefault("copy", []).append(run_child("copy", src, work / "out"))
            shutil.rmtree(work / "out")
            for dtype, shard in (("float32", "250MB"), ("float32", "1GB"), ("bfloat16", "250MB")):
                name = f"convert to {dtype}, {shard} output shards"
                runs.setdefault(name, []).append(run_child("convert", src, work / "out", shard, dtype))
                shutil.rmtree(work / "out")
        # Best wall time of the repeats; the largest peak RSS.
        results = {
            name: {"seconds": min(r["seconds"] for r in rs), "peak_rss": max(r["peak_rss"] for r in rs),
                   "imported_rss": min(r["imported_rss"] for r in rs)}
            for name, rs in runs.items()
        }
        for name, r in results.items():
            print(f"{name:32s} {r['seconds']:6.1f} s  peak RSS {r['peak_rss'] / 2**20:6.0f} MiB "
                  f"({(r['peak_rss'] - r['imported_rss']) / 2**20:6.0f} MiB above imports)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    copy = results["copy"]["seconds"]
    rows = "\n".join(
        f"| {name} | {r['seconds']:.1f} | {r['seconds'] / copy:.2f}x | {r['peak_rss'] / 2**20:,.0f} | "
        f"{(r['peak_rss'] - r['imported_rss']) / 2**20:,.0f} | {(r['peak_rss'] - r['imported_rss']) / largest:.2f}x |"
        for name, r in results.items()
    )
    body = f"""## Conversion (`convert-llama`): streaming vs plain copy

`PYTHONPATH=. .venv/bin/python benchmarks/bench_conversion.py --layers {args.layers} --shards {args.shards} --repeats {args.repeats}`

Machine: {machine()}; load average {load:.1f} when the runs started (other jobs share the 2 cores and the disk).
Source: generated Llama-shaped float32 checkpoint (width 2048, GQA 32/8, SwiGLU 8192, vocab 16384,
{args.layers} layers), {total / 1e9:.2f} GB in {len(files)} shards, largest shard {largest / 1e6:.0f} MB. Files in the
page cache before the runs; each run in its own process, ending with `os.sync()`; best wall time of {args.repeats}
interleaved runs, largest peak RSS (`VmHWM`). "Above imports" is peak RSS
minus the RSS after the process's imports (torch, transformers, hat); the last column divides it by the largest
source shard. The conversion writes the backbone (the checkpoint less embeddings, head and norm) plus the new
modules (`--preset auto`, ~3%): to float32 the tensors are copied by the kernel (`os.copy_file_range`), to bfloat16
each is read with `safe_open`, cast into one reused buffer and written.

| run | wall s | vs copy | peak RSS MiB | above imports MiB | / largest shard |
| --- | ---: | ---: | ---: | ---: | ---: |
{rows}
"""
    write_section("conversion", body)
    print(body)


if __name__ == "__main__":
    main()
