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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .config import HATConfig
from .splitter import word_lengths_batch


class HATDataCollator:
    """Wraps a collator that pads `input_ids` (and gives an `attention_mask`) and adds `word_lengths`.

    Args:
        collator (`Callable[[list[dict]], dict]`): the collator to wrap, e.g. TRL's `DataCollatorForLanguageModeling`
            (what `SFTTrainer` builds by default, and what `recipes/pretrain.py` uses).
        config (`HATConfig`): the model's config: its special byte values and `max_word_size` are the splitting rule.

    The batch gains `word_lengths`, a `torch.LongTensor` of shape `(B, W)`: bytes per word of each row, in order,
    right-padded with 0 to the row with the most words (W >= 1). Row b's lengths add up to its real bytes.

    Raises:
        ValueError: (on call) the wrapped collator returned a padding-free batch (`position_ids` and no
            `attention_mask`): words would run across the packed sequences.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]], config: HATConfig):
        self.collator = collator
        self.special_byte_values = tuple(sorted(config.special_byte_values))
        self.max_word_size = config.max_word_size

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        input_ids = batch["input_ids"]  # (B, T)
        mask = batch.get("attention_mask")
        if mask is None:
            if "position_ids" in batch:
                raise ValueError(
                    "HATDataCollator got a padding-free batch (`position_ids`, no `attention_mask`): a HAT needs one "
                    "row per sequence, or words would run across sequences"
                )
            mask = torch.ones_like(input_ids)
        mask = mask.bool()
        rows = [input_ids[b][mask[b]].tolist() for b in range(input_ids.shape[0])]
        lengths = word_lengths_batch(rows, self.special_byte_values, self.max_word_size)
        word_lengths = torch.zeros(len(lengths), max(1, max(map(len, lengths), default=0)), dtype=torch.long)  # (B, W)
        for b, row in enumerate(lengths):
            word_lengths[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        batch["word_lengths"] = word_lengths
        return batch

    def __repr__(self) -> str:
        return f"HATDataCollator({self.collator!r}, max_word_size={self.max_word_size})"
