"""Supervised fine-tuning of a HAT on chat data in English and German, with TRL's `SFTTrainer`.

    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml \
        recipes/sft.py --config recipes/llama-3.1-8b/sft.yaml

Data: a `messages` column (lists of `{"role", "content"}`), mixed by probability (`hat.recipes.data.load_mixture`);
a source whose column has another name renames it with `columns: {<name>: messages}`. Every conversation is checked
before the model loads (`hat.recipes.checks.check_chats`: a list of turns with string content and, with
`assistant_only_loss`, an assistant turn); the first bad one is named by file and line. The Llama 3.1 chat template of
the byte tokenizer marks each assistant turn and its `<|eot_id|>` as generation, and `assistant_only_loss: true`
puts the loss on those bytes only.

Lengths are bytes. A conversation longer than `max_length` is cut to its first `max_length` bytes (TRL's
`truncation_mode: keep_start`); one left with no assistant byte is dropped. Both counts are logged.

By default every conversation is its own row (`padding_free: false`, `packing: false`). `packing: true` (TRL's
best-fit packing) and `padding_free: true` put several conversations in one row, with `position_ids` restarting at 0
for each: the model reads every conversation as if it were alone (its own attention in encoder, backbone and decoder,
its own words and positions, ARCHITECTURE.md §3.1), so packing changes the speed, not the loss. TRL's collator is
wrapped in `hat.collator.HATDataCollator`, which adds each row's word lengths (conversation by conversation in a
packed row), so the model's `forward` does not split words.
"""

from __future__ import annotations

import functools
import logging

import datasets
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

from hat.collator import HATDataCollator
from hat.recipes.checks import check_chats
from hat.recipes.data import DataArguments, chat_lengths, load_mixture
from hat.recipes.utils import load_model, load_tokenizer, lora_config, recipe_parser, setup_logging, train_and_save

logger = logging.getLogger(__name__)


def main(script_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    setup_logging(training_args)
    if not training_args.assistant_only_loss:
        logger.warning("assistant_only_loss is false: the loss covers the prompts too")
    if training_args.packing and training_args.packing_strategy == "wrapped" and not training_args.padding_free:
        logger.warning("packing_strategy 'wrapped' cuts rows at max_length: conversations attend to each other and "
                       "the words at the cuts are split in two; the default 'bfd' keeps each conversation apart")

    # ------------------------------------------------------------------ load data
    tokenizer = load_tokenizer(model_args.model_name_or_path)

    check = functools.partial(check_chats, assistant_only_loss=training_args.assistant_only_loss)

    def chats(sources, name):
        dataset = load_mixture(
            sources, columns=("messages",), streaming=script_args.streaming, seed=training_args.seed, check=check
        )
        if isinstance(dataset, datasets.Dataset) and training_args.max_length is not None:
            lengths = chat_lengths(dataset, tokenizer, training_args.dataset_num_proc)
            over = sum(n > training_args.max_length for n in lengths)
            logger.info(f"{name}: {len(lengths)} conversations, the longest {max(lengths)} bytes")
            if over:
                logger.warning(
                    f"{name}: {over} of {len(lengths)} conversations are longer than max_length "
                    f"({training_args.max_length} bytes) and are cut to their first {training_args.max_length} bytes"
                )
        return dataset

    with training_args.main_process_first(desc="loading chat data"):
        train_dataset = chats(script_args.datasets, "train")
        eval_dataset = chats(script_args.eval_datasets, "eval") if script_args.eval_datasets else None

    # ------------------------------------------------------------------ build model
    model = load_model(model_args)

    # ------------------------------------------------------------------ train
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(model_args),
    )
    # TRL's own collator (its padding and labels), plus the word lengths. Wrapped after construction rather than passed
    # in, so that SFTTrainer still builds and configures it (pad token checked and mirrored onto the model's config).
    trainer.data_collator = HATDataCollator(trainer.data_collator, model.config)
    if isinstance(train_dataset, datasets.Dataset):
        dropped = len(train_dataset) - len(trainer.train_dataset)
        if dropped:
            logger.warning(f"train: {dropped} conversations dropped: no assistant byte within max_length")
    return train_and_save(trainer, training_args)


def make_parser() -> TrlParser:
    return recipe_parser((DataArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
