"""Bilingual evaluation of HAT against the Llama it came from (see eval/README.md).

    python -m hat.eval.harness --model hat --model_args pretrained=DIR --tasks hat_en,hat_de     # lm-eval-harness
    python -m hat.eval.report --hat DIR --llama DIR_OR_GGUF --texts en.txt de.txt --out outputs/report
    python -m hat.eval.offline --tasks hat_en,hat_de --out data/eval_offline                     # once, with network

Modules:
- `harness`: `HATLM`, the lm-eval-harness model registered as `hat`, and the `lm_eval` entry point.
- `intrinsic`: bits per byte on text files (HAT and token models), compression (bytes per backbone position).
- `noise`: seeded character noise (swap / drop / insert) and ALL CAPS.
- `robustness`: relative change of bits per byte and of multiple-choice accuracy under noise.
- `loading`: load a HAT checkpoint and a Llama (HF directory or GGUF), offline.
- `report`: the side-by-side report (markdown, PNG plots, JSON) of HAT and its source Llama.
- `offline`: exports lm-eval task data to local JSON files plus task overrides that read them.
"""
