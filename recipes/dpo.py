"""Direct preference optimisation of a HAT on English and German preference pairs, with TRL's `DPOTrainer`.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml \
        recipes/dpo.py --config recipes/llama-3.1-8b/dpo.yaml

Data: `chosen` and `rejected` columns, with an optional `prompt`; each either conversational (lists of
`{"role", "content"}`) or plain text. Plain-text pairs become a user turn and an assistant turn
(`hat.recipes.data.preference_as_chat`), so every pair is trained in the chat format and sources of both formats
mix; a plain-text pair therefore needs its `prompt`. Without `prompt`, TRL takes the shared start of the two
conversations as the prompt. Sources are mixed by probability (`hat.recipes.data.load_mixture`). Every pair is
checked before the model loads (`hat.recipes.checks.check_preferences`); pairs with chosen == rejected, which train
with zero gradient, are counted in a warning.

Log-probabilities are sums over the completion's bytes, computed by TRL's fused LM head from
`model.model(...).last_hidden_state` and `lm_head`. The model splits the bytes into words itself here: DPOTrainer
builds its batches inside the training step (prompt + chosen and prompt + rejected, concatenated), after the data
collator has run, so `hat.collator.HATDataCollator` cannot give it word lengths.

The reference model:
- full fine-tuning: an explicit `ref_model`, loaded from the same checkpoint (TRL wraps it for DeepSpeed and never
  trains it); with `precompute_ref_log_probs: true` none is kept: its log-probs are computed once, before training;
- LoRA (`use_peft: true`): the policy with its adapters disabled, which is the starting checkpoint, since PEFT
  keeps the originals of the fully trained HAT parts (`modules_to_save`) beside their trained copies.

Lengths are bytes. The prompt plus the longer completion of a pair is cut to its first `max_length` bytes
(`truncation_mode: keep_start`); pairs whose prompt alone fills `max_length` are dropped. Both counts are logged.
"""

from __future__ import annotations

import logging

import datasets
from trl import DPOConfig, DPOTrainer, ModelConfig, TrlParser

from hat.recipes.checks import check_preferences
from hat.recipes.data import DataArguments, load_mixture, preference_as_chat, preference_overflow
from hat.recipes.utils import load_model, load_tokenizer, lora_config, recipe_parser, setup_logging, train_and_save

logger = logging.getLogger(__name__)


def main(script_args: DataArguments, training_args: DPOConfig, model_args: ModelConfig) -> DPOTrainer:
    setup_logging(training_args)
    if training_args.padding_free:
        raise ValueError("HAT cannot train padding-free batches: words would run across sequences. Set `padding_free: false`.")

    # ------------------------------------------------------------------ load data
    tokenizer = load_tokenizer(model_args.model_name_or_path)

    def pairs(sources):
        return load_mixture(
            sources, columns=("chosen", "rejected"), optional_columns=("prompt",),
            streaming=script_args.streaming, seed=training_args.seed, transform=preference_as_chat,
            check=check_preferences,
        )  # fmt: skip

    with training_args.main_process_first(desc="loading preference data"):
        train_dataset = pairs(script_args.datasets)
        eval_dataset = pairs(script_args.eval_datasets) if script_args.eval_datasets else None

    # ------------------------------------------------------------------ build models
    model = load_model(model_args)
    peft_config = lora_config(model_args)
    ref_model = None
    if peft_config is None and not training_args.precompute_ref_log_probs:
        ref_model = load_model(model_args)

    # ------------------------------------------------------------------ train
    # No HATDataCollator: DPOTrainer concatenates prompt + chosen / rejected inside its training step, after the
    # collator, and calls the model with input_ids and attention_mask only; the model splits those rows itself.
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    prepared = trainer.train_dataset
    if isinstance(prepared, datasets.Dataset) and training_args.max_length is not None:
        dropped = len(train_dataset) - len(prepared)
        cut = preference_overflow(prepared, training_args.max_length)
        if dropped or cut:
            logger.warning(
                f"train: {cut} of {len(prepared)} pairs are longer than max_length ({training_args.max_length} bytes) "
                f"and are cut to their first {training_args.max_length} bytes; {dropped} pairs dropped: their prompt "
                "alone fills max_length"
            )
    return train_and_save(trainer, training_args)


def make_parser() -> TrlParser:
    return recipe_parser((DataArguments, DPOConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
