"""Conversion quality: held-out bits per byte against training bytes and CPU seconds, plain stage 1 vs teacher-guided
stage 1, on the embedded SmolLM2-135M-Instruct, with the source's own bits per byte as the line to reach.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_conversion_quality.py              # plain, teacher, the demo
    PYTHONPATH=. .venv/bin/python benchmarks/bench_conversion_quality.py --ablations   # the defaults' evidence

Each variant converts SmolLM2 (`convert-llama`, with the teacher files; `hidden_size`, `encoder_layers`, ... in a
variant change the byte sizes) and runs `recipes/pretrain.py --config recipes/smollm2-135m/pretrain.yaml` in its own
process, with the YAML's keys overridden by the variant (`name:key=value,key=value`). `recipes/heldout.py` scores
the bundled held-out English and German text every `--heldout-steps` steps: the HAT on its own and, with a teacher,
conditioned on the teacher's states ("oracle"). Writes the `conversion-quality` section of BENCHMARKS.md and
`benchmarks/conversion_quality.png` (`--ablations`: the `conversion-ablations` section and
`benchmarks/conversion_ablations.png`). Reruns reuse finished variants in `--work` unless `--fresh`.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from benchmarks._common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LANGS = {"en": "English", "de": "German"}
HELDOUT = {lang: str(ROOT / "data" / "corpus" / lang / "heldout.txt") for lang in LANGS}
SIZE_KEYS = ("hidden_size", "encoder_layers", "decoder_layers", "num_heads", "intermediate_size")
# Plain stage 1 and teacher-guided stage 1 at the 3% rule's width 128 with Bolmo's k = 4 (the same budget: plain is
# faster per step, no teacher pass, so it gets 400 steps to the teacher's 300), plain at width 256, and the demo's
# YAML as it is (k = 0, the auto preset's width 256)
DEFAULT_VARIANTS = ["plain_w128:teacher=false,max_steps=400,warmup_steps=10,hidden_size=128",
                    "teacher_k4_w128:teacher_layers=4,hidden_size=128",
                    "plain_w256:teacher=false,max_steps=400,warmup_steps=10,hidden_size=256", "demo"]
# The defaults' evidence, at a third of the demo's steps (oracle, handoff and own phases scaled alike): the matched
# depth k, the distillation term, the byte modules' width, the learning rate; and today's stage 1 (plain, the
# backbone in the optimizer at learning rate 0, so its weight gradients are computed) for the step time.
SHORT = "max_steps=100,oracle_steps=50,handoff_steps=30"
W128 = "teacher_layers=4,hidden_size=128"  # the starting point: Bolmo's k = 4, the 3% rule's width
ABLATION_VARIANTS = [
    f"k4_w128:{SHORT},{W128}",
    f"k0_w128:{SHORT},teacher_layers=0,hidden_size=128",
    f"first_byte_k4_w128:{SHORT},{W128},distill_loss=first_byte",
    f"chunk_k4_w128:{SHORT},{W128},distill_loss=chunk",
    f"no_distill_k4_w128:{SHORT},{W128},distill_loss=none",
    f"k4_w256:{SHORT},teacher_layers=4,hidden_size=256",
    f"lr4e-3_k4_w128:{SHORT},{W128},learning_rate=4e-3",
    "today_plain_w128:teacher=false,max_steps=100,freeze_backbone_steps=99,hidden_size=128",
]


def parse_variant(spec: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """`name:key=value,...` -> (name, recipe overrides, conversion size overrides)."""
    name, _, rest = spec.partition(":")
    pairs = dict(item.split("=", 1) for item in rest.split(",") if item)
    sizes = {k: v for k, v in pairs.items() if k in SIZE_KEYS}
    return name, {k: v for k, v in pairs.items() if k not in SIZE_KEYS}, sizes


def run(cmd: list[str], log: Path, threads: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)


def convert(work: Path, sizes: dict[str, str], threads: int) -> Path:
    out = work / ("hat" + "".join(f"-{k}{v}" for k, v in sorted(sizes.items())))
    if not (out / "config.json").is_file():
        args = [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]
        run([sys.executable, "-m", "hat.convert", "--output", str(out), "--overwrite", *args], work / f"{out.name}.log",
            threads)
    return out


def source_bpb(model_dir: Path) -> dict[str, float]:
    """The source SmolLM2's bits per byte: its blocks (the HAT's backbone) with its embedding and head (teacher/)."""
    import torch
    from transformers import AutoTokenizer

    from hat import HATForCausalLM
    from hat.eval.intrinsic import token_bits_per_byte
    from hat.teacher import TEACHER_DIR, HATTeacher

    hat = HATForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    source = HATTeacher.from_pretrained(model_dir).source_model(hat)
    tokenizer = AutoTokenizer.from_pretrained(model_dir / TEACHER_DIR)
    return {lang: token_bits_per_byte(source, tokenizer, Path(path).read_text(encoding="utf-8"), window=512,
                                      batch_size=4, progress=False).bits_per_byte for lang, path in HELDOUT.items()}


def train(name: str, model_dir: Path, overrides: dict[str, str], work: Path, heldout_steps: int, threads: int) -> dict:
    out = work / name
    curve_file = out / "heldout_curve.json"
    if not curve_file.is_file():
        shutil.rmtree(out, ignore_errors=True)
        yaml_path = work / f"{name}.yaml"
        config = yaml.safe_load((ROOT / "recipes" / "smollm2-135m" / "pretrain.yaml").read_text())
        config.update(model_name_or_path=str(model_dir), output_dir=str(out), heldout_files=HELDOUT,
                      heldout_steps=heldout_steps, eval_strategy="no", save_strategy="no")
        for key, value in overrides.items():
            config[key] = yaml.safe_load(value)
        if "max_steps" in overrides and "freeze_backbone_steps" not in overrides:
            config["freeze_backbone_steps"] = config["max_steps"]  # frozen for the whole run, as in the demo
        yaml_path.write_text(yaml.safe_dump(config))
        start = time.time()
        run([sys.executable, "recipes/pretrain.py", "--config", str(yaml_path)], work / f"{name}.train.log", threads)
        (out / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
    curve = json.loads(curve_file.read_text())
    every = yaml.safe_load((work / f"{name}.yaml").read_text())["logging_steps"]
    return {"curve": curve, "wall_seconds": float((out / "wall_seconds.txt").read_text()),
            "log": logged(work / f"{name}.train.log", every)}


def logged(path: Path, every: int) -> list[dict]:
    """The Trainer's log lines (`{'loss': '5.3', ...}` as it prints them) from a training log, each with its step
    (one line every `logging_steps`)."""
    entries = []
    for line in path.read_text(errors="replace").replace("\r", "\n").splitlines():
        if line.startswith("{'loss'"):
            entry = ast.literal_eval(line)
            entries.append({k: float(v) if isinstance(v, str) else v for k, v in entry.items()})
    for i, entry in enumerate(entries):
        entry["step"] = every * (i + 1)
    return entries


def plot(results: dict, source: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    for row, lang in enumerate(LANGS):
        for col, (x_key, scale, x_label) in enumerate((("train_bytes", 1e6, "training text (MB)"),
                                                       ("cpu_seconds", 60, "CPU minutes (2 threads)"))):
            ax = axes[row][col]
            for name, result in results.items():
                xs = [p[x_key] / scale for p in result["curve"]]
                line, = ax.plot(xs, [p[f"heldout_{lang}_bpb"] for p in result["curve"]], marker="o", label=name)
                oracle = [p.get(f"heldout_{lang}_oracle_bpb") for p in result["curve"]]
                if all(v is not None for v in oracle):
                    ax.plot(xs, oracle, linestyle="--", color=line.get_color(), label=f"{name} (teacher-conditioned)")
            ax.axhline(source[lang], color="black", linewidth=1, label="source SmolLM2")
            ax.axhline(1.5 * source[lang], color="gray", linewidth=1, linestyle=":", label="1.5 x source")
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"{LANGS[lang]} held-out bits per byte")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Stage-1 conversion of SmolLM2-135M-Instruct: plain vs teacher-guided (CPU, 2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def step_seconds(result: dict) -> float:
    """Wall seconds per optimizer step between the first two held-out scorings (which it leaves out), from the
    Trainer's running `train_runtime` in its logs."""
    stop = result["curve"][1]["step"] if len(result["curve"]) > 2 else result["curve"][-1]["step"]
    logged = [(e["step"], float(e["train_runtime"])) for e in result["log"] if "train_runtime" in e and "loss" in e
              and 0 < e["step"] <= stop]
    (first_step, first), (last_step, last) = logged[0], logged[-1]
    return (last - first) / (last_step - first_step)


def plot_bars(results: dict, source: dict[str, float], path: Path) -> None:
    """The ablations: each variant's final held-out bits per byte, English and German side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, lang in zip(axes, LANGS):
        values = [results[n]["curve"][-1][f"heldout_{lang}_bpb"] for n in names]
        ax.barh(names, values, color="tab:blue")
        for y, v in enumerate(values):
            ax.text(v + 0.02, y, f"{v:.2f}", va="center", fontsize=8)
        ax.axvline(source[lang], color="black", linewidth=1, label="source SmolLM2")
        ax.set_xlim(0, max(values) + 0.6)
        ax.invert_yaxis()
        ax.set_xlabel(f"{LANGS[lang]} held-out bits per byte after {results[names[0]]['curve'][-1]['step']} steps")
        ax.grid(alpha=0.3, axis="x")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Stage-1 ablations on SmolLM2-135M-Instruct (one run each; single runs vary by ~0.1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def section(results: dict, source: dict[str, float], specs: list[str], threads: int, ablations: bool,
            note: str = "") -> str:
    rows = []
    for name, result in results.items():
        last = result["curve"][-1]
        steps = last["step"]
        cells = [f"{last[f'heldout_{lang}_bpb']:.3f} ({last[f'heldout_{lang}_bpb'] / source[lang]:.2f}x)"
                 for lang in LANGS]
        oracle = [f"{last[f'heldout_{lang}_oracle_bpb']:.3f}" if f"heldout_{lang}_oracle_bpb" in last else "-"
                  for lang in LANGS]
        rows.append(f"| {name} | {steps} | {last['train_bytes'] / 1e6:.2f} M | {last['cpu_seconds'] / 60:.1f} | "
                    f"{step_seconds(result):.2f} | {' | '.join(cells)} | {' | '.join(oracle)} |")
    flag = " --ablations" if ablations else ""
    title = ("Conversion ablations: what the teacher-guided defaults rest on" if ablations
             else "Conversion quality: plain vs teacher-guided stage 1")
    image = "conversion_ablations.png" if ablations else "conversion_quality.png"
    caption = "final held-out bits per byte of each variant" if ablations else \
        "held-out bits per byte against training bytes and CPU seconds"
    return f"""## {title}

`python benchmarks/bench_conversion_quality.py{flag} --variants {' '.join(specs)}` on {machine()}, {threads} threads.
SmolLM2-135M-Instruct converted with `convert-llama`, trained with `recipes/smollm2-135m/pretrain.yaml` and the
variant's overrides; held-out bits per byte of the bundled corpus (`data/corpus/*/heldout.txt`), the HAT on its own
(and, with a teacher, conditioned on the teacher's states: how much of the gap is the decoder's). The source's own
bits per byte: English {source['en']:.3f}, German {source['de']:.3f}. CPU minutes are the training process's (both
threads), held-out scoring included; seconds per step are wall time between two scorings.

| variant | steps | training bytes | CPU min | s/step | English bpb (x source) | German bpb (x source) | English teacher-conditioned | German teacher-conditioned |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
{chr(10) + note + chr(10) if note else ""}
![{caption}](benchmarks/{image})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=None, help="name:key=value,... (default: plain and teacher)")
    parser.add_argument("--ablations", action="store_true", help="the ablation variants, into their own section")
    parser.add_argument("--heldout-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-conversion-quality")
    parser.add_argument("--fresh", action="store_true", help="rerun every variant")
    parser.add_argument("--no-write", action="store_true", help="print, do not rewrite BENCHMARKS.md")
    parser.add_argument("--note", default="", help="a paragraph printed under the table (what the run was shared with)")
    args = parser.parse_args()
    args.variants = args.variants or (ABLATION_VARIANTS if args.ablations else DEFAULT_VARIANTS)
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    results, source = {}, None
    saved = args.work / "results.json"
    if saved.is_file():  # the source's bits per byte do not change between reruns
        source = json.loads(saved.read_text()).get("source")
    for spec in args.variants:
        name, overrides, sizes = parse_variant(spec)
        model_dir = convert(args.work, sizes, args.threads)
        source = source or source_bpb(model_dir)
        print(f"== {name}: {overrides} {sizes}", flush=True)
        results[name] = train(name, model_dir, overrides, args.work, args.heldout_steps, args.threads)
        print(json.dumps(results[name]["curve"][-1]), flush=True)
    (args.work / "results.json").write_text(json.dumps({"source": source, "results": results}, indent=1))
    body = section(results, source, args.variants, args.threads, args.ablations, args.note)
    if args.no_write:
        print(body)
        return
    name = "conversion-ablations" if args.ablations else "conversion-quality"
    (plot_bars if args.ablations else plot)(results, source, ROOT / "benchmarks" / f"{name.replace('-', '_')}.png")
    write_section(name, body)


if __name__ == "__main__":
    main()
