"""A data collator that adds each row's word lengths to the batch, so that the training `forward` never splits words.

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
    from hat.collator import HATDataCollator

    collator = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=192), config)
    batch = collator([{"input_ids": list(b"Hallo Welt")}, {"input_ids": list(b"Hi.")}])
    batch["word_lengths"]  # tensor([[5, 5], [3, 0]]): "Hallo" " Welt" | "Hi."

Word splitting is CPU work on bytes (ARCHITECTURE.md §1). Done inside `forward`, every training step would copy the
batch from the device to the host and wait for the splitter; done here, it runs in the DataLoader (in its worker
processes with `dataloader_num_workers > 0`) while the previous step computes. The rule is the model's own
(`HATModel.word_lengths`): each row's real bytes (attention mask 1), split by `hat.splitter.word_lengths_batch` with
the config's special bytes and `max_word_size`, so the model trains on exactly the words it would find itself.

Padding-free batches (TRL's `padding_free=True` and `packing=True`: one row, documents marked by `position_ids`
restarting at 0, and `cu_seq_lens_q`) are split document by document, as the model reads them
(`hat.model.layout.packed_documents`): no word runs across two documents.

Wrap TRL's collator, not transformers' `DataCollatorForLanguageModeling`: that one sets the label of every byte equal
to the pad id to -100, and a HAT's pad id is its end-of-text byte (192, `<|eot_id|>`), so the model would never
learn to end a text or a turn. `HATDataCollator` refuses it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .config import HATConfig
from .model.layout import document_lengths, packed_documents, packed_word_lengths
from .splitter import word_lengths_batch


class HATDataCollator:
    """Wraps a collator that pads `input_ids` (and gives an `attention_mask`) and adds `word_lengths`.

    Args:
        collator (`Callable[[list[dict]], dict]`): the collator to wrap, e.g. TRL's `DataCollatorForLanguageModeling`
            (what `SFTTrainer` builds by default, and what `recipes/pretrain.py` uses).
        config (`HATConfig`): the model's config: its special byte values and `max_word_size` are the splitting rule.

    The batch gains `word_lengths`, a `torch.LongTensor` of shape `(B, W)`: bytes per word of each row, in order,
    right-padded with 0 to the row with the most words (W >= 1). Row b's lengths add up to its real bytes.

    A padding-free batch (packed documents) gets each document's words, in order.

    Raises:
        ValueError: `collator` is transformers' `DataCollatorForLanguageModeling` for causal LM with the pad id among
            the special bytes: it would take every end-of-text byte out of the loss.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]], config: HATConfig):
        _check_not_masking_eos(collator, config)
        self.collator = collator
        self.special_byte_values = tuple(sorted(config.special_byte_values))
        self.max_word_size = config.max_word_size

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        input_ids = batch["input_ids"]  # (B, T)
        mask = batch.get("attention_mask")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
        documents = packed_documents(input_ids.shape, batch.get("position_ids"), batch.get("cu_seq_lens_q"),
                                     batch.get("seq_idx"))  # (B, T) or None: the model's reading of the batch
        rows = [input_ids[b][mask[b]].tolist() for b in range(input_ids.shape[0])]
        split = functools.partial(word_lengths_batch, special_byte_values=self.special_byte_values,
                                  max_word_size=self.max_word_size)
        lengths = split(rows) if documents is None else packed_word_lengths(rows, document_lengths(documents, mask), split)
        word_lengths = torch.zeros(len(lengths), max(1, max(map(len, lengths), default=0)), dtype=torch.long)  # (B, W)
        for b, row in enumerate(lengths):
            word_lengths[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        batch["word_lengths"] = word_lengths
        return batch

    def __repr__(self) -> str:
        return f"HATDataCollator({self.collator!r}, max_word_size={self.max_word_size})"


def _check_not_masking_eos(collator, config: HATConfig) -> None:
    from transformers import DataCollatorForLanguageModeling

    tokenizer = getattr(collator, "tokenizer", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if isinstance(collator, DataCollatorForLanguageModeling) and not collator.mlm and pad in config.special_byte_values:
        raise ValueError(
            f"transformers' DataCollatorForLanguageModeling sets the label of every byte {pad} (the pad id) to -100, "
            f"and {pad} is a special byte ({config.special_token_dict}): every end of text would leave the loss. "
            "Wrap TRL's collator instead: trl.trainer.sft_trainer.DataCollatorForLanguageModeling(pad_token_id=...)"
        )
