"""Stage-1 conversion training: the new encoder, connectors and decoder learn from scratch on English and German
text while the Llama backbone stays frozen; after `freeze_backbone_steps` the backbone trains too, at
`backbone_lr_ratio` times the learning rate (ARCHITECTURE.md §7).

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero2.yaml \
        recipes/pretrain.py --config recipes/llama-3.1-8b/pretrain.yaml

How the backbone is frozen. The backbone is in the optimizer from the first step, in its own parameter groups,
and the LR schedule multiplies those groups' learning rate by 0 until `freeze_backbone_steps`. AdamW's decoupled
weight decay is scaled by the learning rate too (`p *= 1 - lr * wd`), so with lr 0 the backbone weights stay
exactly as they were. Flipping `requires_grad` mid-run would instead leave DeepSpeed ZeRO without the backbone:
ZeRO builds its flat, sharded fp32 copies of the trainable parameters once, at `deepspeed.initialize`. Costs of
this choice: the frozen phase still computes the backbone's weight gradients (activation gradients flow through
the backbone to the encoder either way), and those gradients count in the global norm for clipping. Gain: one
mechanism for every backend, and a resumed run restores the schedule and with it the frozen or unfrozen state.
When the backbone unfreezes, its Adam moments are already warm.

Data: `text` columns, mixed by probability (`hat.recipes.data.load_mixture`), each source checked before the model
loads (`hat.recipes.checks.check_texts`); documents, each ended by `<|eot_id|>`, are concatenated and cut into
sequences of at most `max_length_bytes` bytes at word boundaries (`hat.recipes.data.pack_words`). Long documents
continue in the next sequence; nothing is cut off. The collator (`hat.collator.HATDataCollator`) adds each row's
word lengths, so the model's `forward` does not split words on the training path.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoConfig, Trainer, TrainingArguments, get_scheduler
from trl import ModelConfig, TrlParser
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from hat.collator import HATDataCollator
from hat.model.parts import is_backbone
from hat.recipes.checks import check_texts
from hat.recipes.data import DataArguments, load_mixture, pretraining_sequences
from hat.recipes.utils import load_model, load_tokenizer, recipe_parser, setup_logging, train_and_save

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig(TrainingArguments):
    r"""`TrainingArguments` for stage-1 conversion, with the optimizer defaults of ARCHITECTURE.md §7 (AdamW betas (0.9, 0.95),
    eps 1e-8, weight decay 0.1, 500 warmup steps, cosine down to 10% of the peak).

    Args:
        freeze_backbone_steps (`int`): optimizer steps during which the backbone's learning rate is 0.
        backbone_lr_ratio (`float`): the backbone's learning rate as a fraction of `learning_rate` once unfrozen.
        max_length_bytes (`int`): longest training sequence, in bytes.
    """

    freeze_backbone_steps: int = field(default=2000, metadata={"help": "Steps with the backbone frozen (lr 0)."})
    backbone_lr_ratio: float = field(default=0.1, metadata={"help": "Backbone lr / lr once unfrozen."})
    max_length_bytes: int = field(default=8192, metadata={"help": "Longest training sequence in bytes."})
    # ARCHITECTURE.md §7 defaults (the peak learning rate is not the paper's: ours, for the new parts)
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    adam_beta2: float = 0.95
    warmup_steps: float = 500
    lr_scheduler_type: str = "cosine_with_min_lr"
    lr_scheduler_kwargs: dict | str | None = field(default_factory=lambda: {"min_lr_rate": 0.1})

    def __post_init__(self):
        super().__post_init__()
        if self.freeze_backbone_steps < 0 or self.backbone_lr_ratio < 0:
            raise ValueError(
                f"freeze_backbone_steps ({self.freeze_backbone_steps}) and backbone_lr_ratio "
                f"({self.backbone_lr_ratio}) must be >= 0"
            )


def _after(multiplier, start: int, step: int) -> float:
    """`multiplier(step)` from `start` on, 0 before. LambdaLR calls it with the number of steps taken so far."""
    return multiplier(step) if step >= start else 0.0


class PretrainTrainer(Trainer):
    """`Trainer` with the backbone in separate optimizer groups, frozen by the schedule for the first steps."""

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(model))
            groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
            for name, param in model.named_parameters():
                if param.requires_grad:
                    groups.setdefault((is_backbone(name), name in decay), []).append(param)
            if not any(backbone for backbone, _ in groups):
                raise ValueError("no trainable backbone parameters (`model.backbone.*`) in the model")
            lr, wd = self.args.learning_rate, self.args.weight_decay
            # Sorted: the new parts come first, so the logged learning rate (group 0) is theirs
            param_groups = [
                {
                    "params": params,
                    "lr": lr * self.args.backbone_lr_ratio if backbone else lr,
                    "weight_decay": wd if decayed else 0.0,
                    "backbone": backbone,
                }
                for (backbone, decayed), params in sorted(groups.items())
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            # The configured schedule (warmup + cosine to 10% by default) as a multiplier of each group's lr ...
            reference = get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            if not isinstance(reference, LambdaLR):
                raise ValueError(f"lr_scheduler_type {self.args.lr_scheduler_type!r} is not supported by pretrain.py")
            multiplier = reference.lr_lambdas[0]
            # ... held at 0 for the backbone groups until `freeze_backbone_steps`
            frozen_then = functools.partial(_after, multiplier, self.args.freeze_backbone_steps)
            lambdas = [frozen_then if group["backbone"] else multiplier for group in optimizer.param_groups]
            self.lr_scheduler = LambdaLR(optimizer, lambdas)
            self._created_lr_scheduler = True
        return self.lr_scheduler


def main(script_args: DataArguments, training_args: PretrainConfig, model_args: ModelConfig) -> PretrainTrainer:
    setup_logging(training_args)
    if model_args.use_peft:
        raise ValueError("pretrain.py trains the new HAT parts in full; LoRA (`use_peft`) is for sft.py and dpo.py")

    # ------------------------------------------------------------------ load data
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    config = AutoConfig.from_pretrained(model_args.model_name_or_path)

    def sequences(sources):
        text = load_mixture(
            sources, columns=("text",), streaming=script_args.streaming, seed=training_args.seed, check=check_texts
        )
        return pretraining_sequences(text, training_args.max_length_bytes, config.max_word_size, tokenizer.eos_token_id)

    with training_args.main_process_first(desc="cutting text into byte sequences"):
        train_dataset = sequences(script_args.datasets)
        eval_dataset = sequences(script_args.eval_datasets) if script_args.eval_datasets else None
    if script_args.streaming:
        # Each process reads its own shards; batches of different lengths cannot be dispatched from one process
        training_args.accelerator_config.dispatch_batches = False

    # ------------------------------------------------------------------ build model
    model = load_model(model_args)
    n_backbone = n_new = 0
    for name, param in model.named_parameters():
        numel = getattr(param, "ds_numel", param.numel())  # under ZeRO-3 the local shard may be empty
        if is_backbone(name):
            n_backbone += numel
        elif param.requires_grad:
            n_new += numel
    logger.info(
        f"backbone: {n_backbone:,} parameters, frozen for {training_args.freeze_backbone_steps} steps, then at "
        f"{training_args.backbone_lr_ratio} x lr; new parts: {n_new:,} trainable parameters"
    )

    # ------------------------------------------------------------------ train
    trainer = PretrainTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        # Pads with eos (192) but labels padding -100 from the lengths, so real eos bytes keep their loss; adds the
        # word lengths, so that forward does not split
        data_collator=HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), config),
    )
    return train_and_save(trainer, training_args)


def make_parser() -> TrlParser:
    return recipe_parser((DataArguments, PretrainConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
