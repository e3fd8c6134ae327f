"""hat.collator: word lengths computed in the data pipeline, by the model's rule; forward then does not split."""

from __future__ import annotations

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from hat import HATConfig
from hat.collator import HATDataCollator
from hat.splitter import split_words, word_lengths_from_bytes
from tests.helpers.splitting import splitter_calls

EOT = 192
TEXTS = ["Hallo Welt, wie geht's?", "Hi.", "Straße über 3.14 Brücken 👋🏽", "x" * 30]


def features() -> list[dict]:
    """Rows as the recipes give them: UTF-8 bytes, one with an eos byte inside, one with a broken character."""
    rows = [list(t.encode()) for t in TEXTS]
    # a special byte, then a stray continuation byte (the lead byte of "ü" dropped)
    rows[1] = rows[1] + [EOT] + list("Tschüss".encode().replace(b"\xc3", b""))
    return [{"input_ids": r} for r in rows]


def test_word_lengths_follow_the_models_rule():
    config = HATConfig.tiny()
    config.max_word_size = 8  # so that "x" * 30 is cut
    collator = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=EOT), config)
    rows = features()
    batch = collator(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "word_lengths"}
    word_lengths = batch["word_lengths"]
    expected = [word_lengths_from_bytes(r["input_ids"], config.special_byte_values, 8) for r in rows]
    W = max(map(len, expected))
    assert word_lengths.dtype == torch.long and word_lengths.shape == (len(rows), W)
    for b, lengths in enumerate(expected):
        assert word_lengths[b].tolist() == lengths + [0] * (W - len(lengths))  # right-padded with 0
        assert int(word_lengths[b].sum()) == int(batch["attention_mask"][b].sum()) == len(rows[b]["input_ids"])
    assert expected[0] == [len(w) for w in split_words(TEXTS[0], 8)]  # plain text: the words of the splitter
    assert expected[3] == [8, 8, 8, 6]


def test_left_padding_and_no_mask():
    """Real bytes are found from the attention mask, wherever the padding is; no mask means every byte is real."""
    config = HATConfig.tiny()

    def left_padding(rows):
        T = max(len(r["input_ids"]) for r in rows)
        ids = [[EOT] * (T - len(r["input_ids"])) + r["input_ids"] for r in rows]
        mask = [[0] * (T - len(r["input_ids"])) + [1] * len(r["input_ids"]) for r in rows]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}

    rows = [{"input_ids": list(t.encode())} for t in TEXTS[:2]]
    left = HATDataCollator(left_padding, config)(rows)["word_lengths"]
    right = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=EOT), config)(rows)["word_lengths"]
    assert torch.equal(left, right)
    one = HATDataCollator(lambda rows: {"input_ids": torch.tensor([rows[0]["input_ids"]])}, config)(rows)
    assert one["word_lengths"][0].tolist() == [len(w) for w in split_words(TEXTS[0])]


def test_padding_free_batches_are_split_document_by_document(tiny_model):
    """TRL's padding-free batch (one row, position_ids restarting at 0): each document's own words, so the model's
    forward neither splits nor sees a word across two documents, and the logits are those of the split model."""
    rows = features()
    packed = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=EOT, padding_free=True), tiny_model.config)
    batch = packed(rows)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    expected = [n for r in rows for n in word_lengths_from_bytes(r["input_ids"], {EOT}, tiny_model.config.max_word_size)]
    assert batch["word_lengths"][0].tolist() == expected
    with splitter_calls() as calls:
        with_lengths = tiny_model(**batch).logits
    assert calls == []
    without = {k: v for k, v in batch.items() if k != "word_lengths"}
    torch.testing.assert_close(with_lengths, tiny_model(**without).logits, rtol=0, atol=0)


def test_transformers_language_modeling_collator_is_refused():
    """transformers' collator would set every eos byte's label to -100 (pad == eos); TRL's keeps them."""
    from transformers import DataCollatorForLanguageModeling as StockCollator

    from hat.tokenizer import build_tokenizer

    config, tokenizer = HATConfig.tiny(), build_tokenizer()
    with pytest.raises(ValueError, match="sets the label of every byte 192 \\(the pad id\\) to -100"):
        HATDataCollator(StockCollator(tokenizer, mlm=False), config)
    labels = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=EOT), config)(features())["labels"]
    assert (labels == EOT).sum() == 1  # the eos byte inside row 1 is a target


def test_forward_with_collated_word_lengths_does_not_split_and_gives_the_same_loss(tiny_model):
    tiny_model.train()
    collator = HATDataCollator(DataCollatorForLanguageModeling(pad_token_id=EOT), tiny_model.config)
    batch = collator(features())
    without = {k: v for k, v in batch.items() if k != "word_lengths"}
    torch.manual_seed(0)
    reference = tiny_model(**without)
    reference.loss.backward()
    reference_grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    tiny_model.zero_grad()
    with splitter_calls() as calls:
        torch.manual_seed(0)
        out = tiny_model(**batch)
        out.loss.backward()
    assert calls == []  # the training forward (and backward) did not split
    torch.testing.assert_close(out.loss, reference.loss, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, reference.logits, rtol=0, atol=0)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(dict(tiny_model.named_parameters())[name].grad, grad, rtol=1e-6, atol=1e-7)
    # without the word lengths the model splits (as it must for TRL's DPO and for plain calls)
    with splitter_calls() as calls:
        tiny_model(**without)
    assert "HATModel.word_lengths" in calls
