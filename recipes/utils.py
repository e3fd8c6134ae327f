"""What the three recipes share: the argument parser, logging, loading the model and tokenizer, and the LoRA layout
of a HAT."""

from __future__ import annotations

import logging
import os
import sys

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
    """Train (resuming from `resume_from_checkpoint` if set), then save to `output_dir`: the HAT checkpoint (release
    key names) or the LoRA adapter, with the tokenizer files beside it."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    logger.info(f"saved to {training_args.output_dir}")
    return trainer


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
