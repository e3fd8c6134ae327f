"""Merge a LoRA run of sft.py / dpo.py into a full HAT checkpoint.

    python recipes/merge_lora.py --adapter outputs/llama-3.1-8b-hat-sft-lora --output_dir outputs/llama-3.1-8b-hat-sft-merged

The adapter directory holds the LoRA weights of the backbone and the trained copies of the HAT parts
(`modules_to_save`); its `adapter_config.json` names the base checkpoint (override with `--base`). The merged model
is a plain `HATForCausalLM` saved with the release's key names, with the tokenizer files beside it, so
`AutoModelForCausalLM.from_pretrained(output_dir)` loads it.
"""

from __future__ import annotations

import argparse

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM

import hat  # noqa: F401  (registers HATForCausalLM with the Auto classes)
from hat.tokenizer import HATTokenizer


def merge(adapter: str, output_dir: str, base: str | None = None, dtype: str = "auto") -> None:
    base = base or PeftConfig.from_pretrained(adapter).base_model_name_or_path
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(output_dir)
    HATTokenizer.from_pretrained(adapter).save_pretrained(output_dir)  # the run saved its tokenizer beside the adapter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, help="directory of a LoRA run (adapter_config.json)")
    parser.add_argument("--output_dir", required=True, help="where to write the merged HAT checkpoint")
    parser.add_argument("--base", default=None, help="base HAT checkpoint (default: the adapter config's)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    merge(args.adapter, args.output_dir, args.base, args.dtype)


if __name__ == "__main__":
    main()
