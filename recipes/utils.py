"""What the three recipes share: the argument parser, logging, loading the model and tokenizer, the LoRA layout
of a HAT, and resuming from the newest complete checkpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import datasets
import torch
import transformers
from peft import LoraConfig
from transformers import AutoConfig, AutoModelForCausalLM, TrainingArguments
from trl import ModelConfig, TrlParser, get_peft_config

import hat  # noqa: F401  (registers HATForCausalLM with the Auto classes)
from hat.model.parts import BACKBONE_LORA_TARGETS, LORA_MODULES_TO_SAVE
from hat.tokenizer import HATTokenizer, build_tokenizer

logger = logging.getLogger(__name__)


def recipe_parser(dataclass_types: tuple[type, ...]) -> TrlParser:
    """TRL's parser of a recipe's YAML and command line. On a machine without an accelerator, a run of several
    processes (`accelerate launch --num_processes N`, `torchrun`) gets `ddp_backend: gloo` unless the YAML or the
    command line set one: the Trainer's distributed state is made while the arguments are parsed, and without a
    backend it would count one process (DeepSpeed then refuses the batch size). A single process keeps none."""
    parser = TrlParser(dataclass_types)
    if not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parser.set_defaults(ddp_backend="gloo")
    return parser


def setup_logging(training_args: TrainingArguments) -> None:
    """Recipe and `hat` messages at info on the main process (warnings elsewhere), to stdout; transformers and
    datasets at the `log_level` / `log_level_replica` of the YAML."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def train_and_save(trainer: transformers.Trainer, training_args: TrainingArguments) -> transformers.Trainer:
    """Train (resuming as `resume_from_checkpoint` says, see `resolve_resume`), then save to `output_dir`: the HAT
    checkpoint (release key names) or the LoRA adapter, with the tokenizer files beside it, and `trainer_state.json`
    (the log history)."""
    trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    logger.info(f"saved to {training_args.output_dir}")
    return trainer


# ----------------------------------------------------------------------------------------------------------
# Resuming: only from a complete checkpoint
# ----------------------------------------------------------------------------------------------------------
# `Trainer._save_checkpoint` writes checkpoint-N/ in this order: the model (and tokenizer), the optimizer and
# scheduler (under DeepSpeed its `global_stepN/` states and `latest`), the RNG states, and last
# `trainer_state.json`, which is not written atomically (`open(..., "w")` then one `write`). A run killed while it
# saves leaves a directory without that file, or with the file cut short; a run killed while old checkpoints are
# rotated away (`save_total_limit`) can leave one without its weights. Neither must be resumed from.
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "adapter_model.safetensors", "adapter_model.bin")
INCOMPLETE_PREFIX = "incomplete-"  # checkpoint-N -> incomplete-checkpoint-N: out of the Trainer's `checkpoint-*` globs


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why `path` (a `checkpoint-N` directory) cannot be resumed from, or None if it is complete: its
    `trainer_state.json` is whole and says step N, and the weights and optimizer state it was saved with are there."""
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json (the Trainer writes it last: the save was interrupted)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is cut short or corrupt (the save was interrupted)"
    step = _CHECKPOINT.match(path.name)
    if not isinstance(state, dict) or (step and state.get("global_step") != int(step[1])):
        return f"trainer_state.json is for step {state.get('global_step') if isinstance(state, dict) else None!r}"
    names = {p.name for p in path.iterdir()}
    deepspeed = (path / "latest").is_file() and (path / (path / "latest").read_text().strip()).is_dir()
    fsdp = any(n.startswith("pytorch_model_fsdp") for n in names)
    if not (names & set(_WEIGHTS) or deepspeed or fsdp):
        return "no model weights"
    for index in names & {"model.safetensors.index.json", "pytorch_model.bin.index.json"}:
        try:
            shards = set(json.loads((path / index).read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            return f"{index} is cut short or corrupt"
        if missing := sorted(shards - names):
            return f"weight shard(s) missing: {missing}"
    if not ("optimizer.pt" in names or deepspeed or any(n.startswith("optimizer_0") for n in names)):
        return "no optimizer state (saved with save_only_model, or damaged)"
    return None


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-N` directories of a run, newest first."""
    found = [(int(m[1]), p) for p in run_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def _move_aside(path: Path) -> Path:
    """checkpoint-N -> incomplete-checkpoint-N (-1, -2, ... if taken): kept for inspection, out of the Trainer's way."""
    target, n = path.with_name(INCOMPLETE_PREFIX + path.name), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{INCOMPLETE_PREFIX}{path.name}-{n}")
    path.rename(target)
    return target


def newest_complete_checkpoint(
    run_dir: str | os.PathLike, move_aside: bool = False, incomplete: list[str] | None = None
) -> Path | None:
    """The newest complete `checkpoint-N` in `run_dir` (None if there is none). Each incomplete one is named in a
    warning (and appended to `incomplete`) and, with `move_aside`, renamed to `incomplete-checkpoint-N` (never
    deleted): left in place, the Trainer would later write the same step's files into it, or rotate it as if it were
    a checkpoint."""
    newest = None
    for _, path in _checkpoints(Path(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            newest = newest or path
            continue
        where = f"moved aside to {_move_aside(path)}" if move_aside else "left in place"
        logger.warning(f"{path} is incomplete and is not resumed from: {problem}; {where}")
        if incomplete is not None:
            incomplete.append(f"{path.name} ({where})")
    return newest


def resolve_resume(training_args: TrainingArguments) -> str | None:
    """The checkpoint to resume from, as `resume_from_checkpoint` says (YAML or command line):
    - unset, `false`: none, train from the start;
    - `true`: the newest complete `checkpoint-N` in `output_dir`;
    - a `checkpoint-N` directory: that one, if complete;
    - a run's output directory: its newest complete checkpoint.
    Incomplete checkpoints are never loaded: they are named in a warning, and those in this run's `output_dir` are
    moved aside (`incomplete-checkpoint-N`) by the main process. The chosen checkpoint is logged.

    Raises:
        ValueError: no such directory, an incomplete checkpoint given by path (the newest complete one beside it is
            named), or no complete checkpoint to resume from.
    """
    value = training_args.resume_from_checkpoint
    if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        value = value.strip().lower() == "true"
    if value is None or value is False:
        return None
    output_dir = Path(training_args.output_dir)
    path = output_dir if value is True else Path(value)
    # The main process inspects (and moves aside) first; the others then find the same checkpoint.
    with training_args.main_process_first(desc="finding the checkpoint to resume from", local=False):
        main = training_args.process_index == 0
        if value is not True and not path.is_dir():
            raise ValueError(f"resume_from_checkpoint: {path} is not a directory")
        if value is not True and _CHECKPOINT.match(path.name):
            problem = checkpoint_problem(path)
            if problem is not None:
                newest = newest_complete_checkpoint(path.parent)
                hint = f"the newest complete one is {newest}" if newest else "there is no complete one beside it"
                raise ValueError(f"resume_from_checkpoint: {path} is incomplete ({problem}); {hint}")
            checkpoint = path
        else:
            same_run = path.resolve() == output_dir.resolve() if output_dir.exists() else False
            incomplete: list[str] = []
            checkpoint = newest_complete_checkpoint(path, main and same_run, incomplete) if path.is_dir() else None
            if checkpoint is None:
                found = f" (only incomplete ones: {', '.join(incomplete)})" if incomplete else ""
                raise ValueError(
                    f"resume_from_checkpoint: no complete checkpoint-N in {path}{found}. Leave resume_from_checkpoint "
                    "unset to train from the start."
                )
    logger.info(f"resuming from {checkpoint}")
    training_args.resume_from_checkpoint = str(checkpoint)
    return str(checkpoint)


def load_model(model_args: ModelConfig) -> transformers.PreTrainedModel:
    """`HATForCausalLM.from_pretrained` with the YAML's `dtype` and `attn_implementation`.

    Call it after the `TrainingArguments` exist: under ZeRO-3 they make `from_pretrained` load the weights
    already sharded (`zero3_init_flag`).
    """
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    return AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
    )


def load_tokenizer(model_name_or_path: str) -> HATTokenizer:
    """The checkpoint's byte tokenizer; one built from its config's `special_token_dict` if it has none (a released
    TFree-HAT checkpoint ships no tokenizer files). `HATTokenizer` encodes special strings inside the data as plain
    bytes, so a dataset cannot inject control tokens."""
    try:
        return HATTokenizer.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as error:  # no tokenizer files: transformers cannot build one from the config
        special_token_dict = AutoConfig.from_pretrained(model_name_or_path).special_token_dict
        logger.warning(f"{model_name_or_path} has no usable tokenizer ({type(error).__name__}); building the byte "
                       f"tokenizer for special_token_dict={special_token_dict}")
        return build_tokenizer(special_token_dict)


def lora_config(model_args: ModelConfig) -> LoraConfig | None:
    """TRL's LoRA config from the YAML's `use_peft` / `lora_*` keys, with the HAT layout where they are unset:
    adapters on the backbone's attention and MLP, the new HAT parts fully trained (`modules_to_save`)."""
    if not model_args.use_peft:
        return None
    if model_args.lora_target_modules is None:
        model_args.lora_target_modules = BACKBONE_LORA_TARGETS
    if model_args.lora_modules_to_save is None:
        model_args.lora_modules_to_save = list(LORA_MODULES_TO_SAVE)
    return get_peft_config(model_args)
