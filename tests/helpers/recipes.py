"""Running the recipes in tests: parse a YAML like the command line does and call the recipe's `main`, read the
saved weights, compare checkpoints.

    from tests.helpers.recipes import run_recipe, losses, weights
    trainer = run_recipe("pretrain", tiny_hat_dir, tmp_path / "out", "--max_steps", "2")
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny"
DATA = REPO / "tests" / "data" / "recipes"
EOT = 192


@contextlib.contextmanager
def in_repo():
    """The YAMLs name their data relative to the repository root."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        yield
    finally:
        os.chdir(cwd)


def recipe_args(stage: str, model: Path, out: Path, *overrides: str, config: Path | None = None) -> list[str]:
    config = config or TINY / f"{stage}.yaml"
    return ["--config", str(config), "--model_name_or_path", str(model), "--output_dir", str(out), *overrides]


def run_recipe(stage: str, model: Path, out: Path, *overrides: str, config: Path | None = None):
    """Parse like the command line does and run `hat.recipes.<stage>.main`; returns its trainer."""
    module = importlib.import_module(f"hat.recipes.{stage}")
    with in_repo():
        args = module.make_parser().parse_args_and_config(recipe_args(stage, model, out, *overrides, config=config))
        return module.main(*args)


def run_on(stage: str, model: Path, tmp_path: Path, data_files, path: str = "json", **changes):
    """Run a tiny recipe on one source: `datasets: [{path, data_files}]`, with further YAML `changes`."""
    config = write_yaml(TINY / f"{stage}.yaml", tmp_path / "recipe.yaml",
                        datasets=[{"path": path, "data_files": data_files}], **changes)  # fmt: skip
    return run_recipe(stage, model, tmp_path / "out", config=config)


def losses(log_history: list[dict]) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}


def weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, under their on-disk (release) names."""
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> dict[str, bool]:
    return {k: not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix)}


def is_inert(name: str) -> bool:
    from hat.model.parts import INERT_PARAMETERS

    return ".decoder_layers." in name and name.endswith(INERT_PARAMETERS)


def assert_reloads(path: Path) -> None:
    """`from_pretrained` loads the saved HAT and its tokenizer with the stock Auto classes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["Hallo Welt", "Hi"], return_tensors="pt", padding=True)
    assert torch.isfinite(model(**batch).logits).all()
    for name, tensor in weights(path).items():  # what is on disk is what loaded
        torch.testing.assert_close(model.state_dict()[f"model.{name}" if name != "lm_head.weight" else name], tensor)


def write_yaml(base: Path, path: Path, **changes) -> Path:
    config = yaml.safe_load(base.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def save_tiny_hat(path: Path) -> Path:
    """A seeded `HATConfig.tiny()` checkpoint with its tokenizer files."""
    from hat import HATConfig, HATForCausalLM
    from hat.tokenizer import build_tokenizer

    torch.manual_seed(0)
    HATForCausalLM(HATConfig.tiny()).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def save_tiny_hat_with_teacher(path: Path) -> Path:
    """A HAT converted in memory from a seeded tiny Llama (width 64, 2 blocks, GQA, llama3 RoPE), with its tokenizer
    files and the teacher files (`teacher/`: the Llama's embedding, norm, head and a byte-level BPE tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hat.convert.in_memory import hat_from_llama
    from hat.teacher import TEACHER_DIR, HATTeacher
    from hat.tokenizer import build_tokenizer
    from tests.helpers.source_tokenizer import byte_level_bpe

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 1024},
    )).eval()
    hat = hat_from_llama(llama, hidden_size=32, num_heads=2, encoder_layers=2, decoder_layers=2, sliding_window=64)
    hat.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    HATTeacher.from_llama(llama, source="tiny-llama").save_pretrained(path / TEACHER_DIR, byte_level_bpe())
    return path


class Records(logging.Handler):
    """Collects the messages logged while it is attached to a logger."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())
