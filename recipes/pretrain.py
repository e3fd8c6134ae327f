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
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoConfig, Trainer, TrainingArguments, get_scheduler
from trl import ModelConfig, TrlParser
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from hat.collator import HATDataCollator
from hat.model.parts import is_backbone
from hat.recipes.checks import check_texts
from hat.recipes.data import DataArguments, load_mixture, pretraining_sequences
from hat.recipes.heldout import HeldoutCallback
from hat.recipes.teacher_guidance import TEACHER_KEYS, GuidanceWeights, TeacherGuidance
from hat.recipes.utils import load_model, load_tokenizer, recipe_parser, setup_logging, train_and_save
from hat.teacher import TEACHER_DIR

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig(TrainingArguments):
    r"""`TrainingArguments` for stage-1 conversion, with the optimizer defaults of ARCHITECTURE.md §7 (AdamW betas (0.9, 0.95),
    eps 1e-8, weight decay 0.1, 500 warmup steps, cosine down to 10% of the peak).

    Args:
        freeze_backbone_steps (`int`): optimizer steps during which the backbone's learning rate is 0. At least
            `max_steps`: the backbone is frozen for the whole run, takes no part in the optimizer and computes no
            weight gradients.
        backbone_lr_ratio (`float`): the backbone's learning rate as a fraction of `learning_rate` once unfrozen.
        max_length_bytes (`int`): longest training sequence, in bytes.
        teacher (`bool`): teacher-guided stage 1 (ARCHITECTURE.md §7.2): learn from the source Llama kept beside the
            checkpoint (`teacher_path`, default `<model_name_or_path>/teacher`, written by `convert-llama`).
        teacher_steps (`int`): steps with the teacher's losses, then plain byte cross-entropy (0: the whole run).
        teacher_layers (`int`): k: the encoder loss compares states after the first k frozen backbone blocks.
        encoder_loss_weight, ce_loss_weight, distill_loss_weight (`float`): the weights of the three terms.
        distill_loss (`str`): `byte_marginals` (the teacher's next-byte distribution at every byte), `first_byte`
            (at the first byte of each token only), `chunk` (likelihood of each aligned word) or `none`.
        oracle_steps (`int`): steps in which the decoder is conditioned on the teacher's states.
        handoff_steps (`int`): then steps over which it moves linearly onto the HAT's own backbone output.
        detach_own_states (`bool`): while the teacher teaches, the decoder reads the HAT's own backbone output
            without a gradient into it: no backward through the backbone, and the pooled words learn from the encoder
            loss alone, which the decoder's gradient through the frozen backbone otherwise pulls them away from
            (ARCHITECTURE.md §7.2). Default on; off: the decoder's loss reaches the encoder end to end.
        teacher_cache_gb (`float`): keep what the teacher says about each row (its states and next-byte targets,
            `hat.recipes.teacher_cache`) up to this many GB of CPU memory per process, so that a row trained on
            again costs no teacher pass: for corpora trained for several epochs (0: recompute every time; refused
            under ZeRO-3, where every process must take part in each teacher pass).
        heldout_files (`dict[str, str]`), heldout_steps (`int`): held-out bits per byte of each file every
            `heldout_steps` steps and at the end (`hat.recipes.heldout`), against bytes trained on and CPU seconds.
    """

    freeze_backbone_steps: int = field(default=2000, metadata={"help": "Steps with the backbone frozen (lr 0)."})
    backbone_lr_ratio: float = field(default=0.1, metadata={"help": "Backbone lr / lr once unfrozen."})
    max_length_bytes: int = field(default=8192, metadata={"help": "Longest training sequence in bytes."})
    # Teacher-guided stage 1 (ARCHITECTURE.md §7.2)
    teacher: bool = field(default=False, metadata={"help": "Learn from the source Llama's teacher files."})
    teacher_path: str | None = field(default=None, metadata={"help": "Default: <model_name_or_path>/teacher."})
    teacher_steps: int = field(default=0, metadata={"help": "Steps with the teacher's losses (0: all)."})
    teacher_layers: int = field(default=4, metadata={"help": "Frozen blocks the encoder loss runs through."})
    encoder_loss_weight: float = 1.0
    ce_loss_weight: float = 1.0
    distill_loss: str = field(default="byte_marginals", metadata={"help": "byte_marginals, first_byte, chunk, none"})
    distill_loss_weight: float = 1.0
    oracle_steps: int = field(default=0, metadata={"help": "Steps with the decoder on the teacher's states."})
    handoff_steps: int = field(default=0, metadata={"help": "Steps to move the decoder onto its own backbone."})
    detach_own_states: bool = field(default=True, metadata={"help": "No gradient through the own backbone output."})
    teacher_cache_gb: float = field(default=0.0, metadata={"help": "CPU GB per process for the teacher's rows."})
    # The learning curve (recipes/heldout.py)
    heldout_files: dict[str, str] | None = field(default=None, metadata={"help": "label -> held-out text file."})
    heldout_steps: int = field(default=0, metadata={"help": "Steps between held-out evaluations (0: at the end)."})
    # ARCHITECTURE.md §7 defaults (the peak learning rate is not the paper's: ours, for the new parts)
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    adam_beta2: float = 0.95
    warmup_steps: float = 500
    lr_scheduler_type: str = "cosine_with_min_lr"
    lr_scheduler_kwargs: dict | str | None = field(default_factory=lambda: {"min_lr_rate": 0.1})

    def __post_init__(self):
        if self.heldout_files and self.include_num_input_tokens_seen in ("no", False):
            self.include_num_input_tokens_seen = "non_padding"  # the curve's training bytes
        super().__post_init__()
        if self.freeze_backbone_steps < 0 or self.backbone_lr_ratio < 0:
            raise ValueError(
                f"freeze_backbone_steps ({self.freeze_backbone_steps}) and backbone_lr_ratio "
                f"({self.backbone_lr_ratio}) must be >= 0"
            )
        if self.teacher:
            self.guidance_weights()  # checks the fields
            if self.teacher_steps < 0:
                raise ValueError(f"teacher_steps must be >= 0, got {self.teacher_steps}")
            if self.teacher_cache_gb < 0:
                raise ValueError(f"teacher_cache_gb must be >= 0, got {self.teacher_cache_gb}")

    @property
    def frozen_throughout(self) -> bool:
        """Whether the backbone stays frozen for the whole run (it then needs no optimizer state or weight gradients)."""
        return 0 < self.max_steps <= self.freeze_backbone_steps

    def guidance_weights(self) -> GuidanceWeights:
        return GuidanceWeights(
            teacher_layers=self.teacher_layers, encoder_loss_weight=self.encoder_loss_weight,
            ce_loss_weight=self.ce_loss_weight, distill_loss=self.distill_loss,
            distill_loss_weight=self.distill_loss_weight, oracle_steps=self.oracle_steps,
            handoff_steps=self.handoff_steps, detach_own_states=self.detach_own_states,
        )


def _after(multiplier, start: int, step: int) -> float:
    """`multiplier(step)` from `start` on, 0 before. LambdaLR calls it with the number of steps taken so far."""
    return multiplier(step) if step >= start else 0.0


class PretrainTrainer(Trainer):
    """`Trainer` with the backbone in separate optimizer groups, frozen by the schedule for the first steps, and
    the teacher-guided loss (`guidance`) while the teacher teaches."""

    def __init__(self, *args, guidance: TeacherGuidance | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.guidance = guidance
        self._terms: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_fields = {k: inputs.pop(k) for k in TEACHER_KEYS if k in inputs}
        step = self.state.global_step
        if self.guidance is None or not model.training or 0 < self.args.teacher_steps <= step:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs, **teacher_fields, objective=self.guidance.objective(step))
        for name, value in self.guidance.metrics.items():
            self._terms.setdefault(name, []).append(value)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """The teacher-guided terms, averaged since the last log, beside the loss."""
        if "loss" in logs and self._terms:
            logs.update({name: sum(v) / len(v) for name, v in self._terms.items()})
            self._terms = {}
        super().log(logs, *args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(model))
            groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
            for name, param in model.named_parameters():
                if param.requires_grad:
                    groups.setdefault((is_backbone(name), name in decay), []).append(param)
            if not self.args.frozen_throughout and not any(backbone for backbone, _ in groups):
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
    if training_args.frozen_throughout:  # no optimizer state, no weight gradients for the backbone
        for name, param in model.named_parameters():
            if is_backbone(name):
                param.requires_grad_(False)
    n_backbone = n_new = 0
    for name, param in model.named_parameters():
        numel = getattr(param, "ds_numel", param.numel())  # under ZeRO-3 the local shard may be empty
        if is_backbone(name):
            n_backbone += numel
        elif param.requires_grad:
            n_new += numel
    frozen = ("frozen for the whole run (no weight gradients)" if training_args.frozen_throughout else
              f"frozen for {training_args.freeze_backbone_steps} steps, then at {training_args.backbone_lr_ratio} x lr")
    logger.info(f"backbone: {n_backbone:,} parameters, {frozen}; new parts: {n_new:,} trainable parameters")
    collator = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id), config)
    guidance = None
    if training_args.teacher:
        collator, guidance = teacher_guidance(model, config, collator, training_args, model_args.model_name_or_path)

    # ------------------------------------------------------------------ train
    callbacks = []
    if training_args.heldout_files:
        teacher_collator = collator if training_args.teacher else None
        callbacks.append(HeldoutCallback(training_args.heldout_files, training_args.heldout_steps, guidance,
                                         teacher_collator))
    trainer = PretrainTrainer(
        model=model,
        callbacks=callbacks,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        # Pads with eos (192) but labels padding -100 from the lengths, so real eos bytes keep their loss; adds the
        # word lengths, so that forward does not split (and, with a teacher, the teacher's tokens and alignment)
        data_collator=collator,
        guidance=guidance,
    )
    train_and_save(trainer, training_args)
    if guidance is not None and training_args.should_save:  # the teacher travels with the checkpoint (evals use it)
        shutil.copytree(teacher_dir(training_args, model_args.model_name_or_path),
                        Path(training_args.output_dir) / TEACHER_DIR, dirs_exist_ok=True)
    return trainer


def teacher_dir(args: PretrainConfig, model_path: str) -> Path:
    return Path(args.teacher_path) if args.teacher_path else Path(model_path) / TEACHER_DIR


def teacher_guidance(model, config, collator, args: PretrainConfig, model_path: str):
    """The teacher (`hat.teacher`, kept by `convert-llama` in `<model>/teacher`), the collator that aligns its tokens
    with the HAT's words, and the loss (`hat.recipes.teacher_guidance`)."""
    from transformers import AutoTokenizer
    from transformers.integrations import is_deepspeed_zero3_enabled

    from hat.recipes.alignment import teacher_special_ids, token_spellings
    from hat.recipes.distill import SpellingTrie
    from hat.recipes.teacher_cache import TeacherCache
    from hat.recipes.teacher_guidance import TeacherCollator
    from hat.teacher import HATTeacher

    path = str(teacher_dir(args, model_path))
    dtype = next(p for n, p in model.named_parameters() if is_backbone(n)).dtype
    teacher = HATTeacher.from_pretrained(path, dtype=dtype)
    if teacher.embed_tokens.embedding_dim != config.backbone_config.hidden_size:
        raise ValueError(f"{path}: the teacher's width is {teacher.embed_tokens.embedding_dim}, the backbone's "
                         f"{config.backbone_config.hidden_size}: not this checkpoint's source")
    tokenizer = AutoTokenizer.from_pretrained(path)
    spellings = token_spellings(tokenizer)
    trie = SpellingTrie(spellings)
    special = teacher_special_ids(tokenizer, config.special_token_dict)
    if args.teacher_cache_gb and is_deepspeed_zero3_enabled():
        raise ValueError("teacher_cache_gb needs every process to run each teacher pass together under ZeRO-3 (the "
                         "backbone is sharded), which a per-process cache cannot promise: set it to 0 with ZeRO-3")
    cache = TeacherCache(int(args.teacher_cache_gb * 2**30))
    logger.info(f"teacher: {teacher.source or path} ({len(tokenizer):,} tokens), k={args.teacher_layers} blocks, "
                f"distillation {args.distill_loss}, cache {args.teacher_cache_gb:g} GB")
    guidance = TeacherGuidance(teacher, trie, args.guidance_weights(), cache)
    return TeacherCollator(collator, tokenizer, trie, special, spellings), guidance


def make_parser() -> TrlParser:
    return recipe_parser((DataArguments, PretrainConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
