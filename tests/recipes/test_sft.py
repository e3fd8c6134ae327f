"""recipes/sft.py at tiny size: trains and saves, loss on assistant bytes only, truncation counted, word lengths from
the collator, packed batches refused."""

from __future__ import annotations

import logging
import math

import pytest

from hat.collator import HATDataCollator
from tests.helpers.recipes import DATA, EOT, Records, assert_reloads, changed, is_inert, losses, run_recipe, weights
from tests.helpers.splitting import splitter_calls

SFT_MAX_LENGTH = 240  # bytes: cuts the 4 longest tiny conversations, keeps the known one (229 bytes) whole
# The known multi-turn conversation (first line of chat_en.jsonl)
KNOWN_CHAT = [("user", "Say hi."), ("assistant", "Hi!"), ("user", "And in German?"), ("assistant", "Hallo!")]


@pytest.fixture(scope="module")
def sft_run(tiny_hat, tmp_path_factory):
    """One SFT run: (trainer, output directory, the messages logged, the model's splitter calls while training)."""
    out = tmp_path_factory.mktemp("sft")
    handler = Records()
    logging.getLogger().addHandler(handler)
    try:
        with splitter_calls() as calls:
            trainer = run_recipe("sft", tiny_hat, out, "--max_length", str(SFT_MAX_LENGTH))
    finally:
        logging.getLogger().removeHandler(handler)
    return trainer, out, handler.messages, calls


def test_sft_trains_and_saves(sft_run, tiny_hat):
    trainer, out, _, _ = sft_run
    steps = losses(trainer.state.log_history)
    assert sorted(steps) == [1, 2, 3] and all(math.isfinite(v) for v in steps.values())
    before, after = weights(tiny_hat), weights(out)
    moved = changed(before, after)
    assert not any(v for k, v in moved.items() if is_inert(k))  # frozen by construction
    for part in ("encoder.", "encoder_connector.", "backbone.", "decoder.", "lm_head."):
        assert all(v for k, v in moved.items() if k.startswith(part) and not is_inert(k)), part
    assert_reloads(out)


def test_sft_batches_carry_word_lengths(sft_run):
    """TRL's collator, wrapped: the training forward never split words."""
    trainer, _, _, calls = sft_run
    assert isinstance(trainer.data_collator, HATDataCollator)
    assert type(trainer.data_collator.collator).__name__ == "DataCollatorForLanguageModeling"  # TRL's own
    assert calls == []


def test_sft_loss_only_on_assistant_bytes(sft_run):
    """The known two-turn chat through TRL's dataset preparation and collator: labels are the assistant replies and
    their `<|eot_id|>`, everything else -100; padding is -100 and masked out."""
    trainer, _, _, _ = sft_run

    def text(s: str) -> list[int]:
        return list(s.encode())

    ids, mask = text("<|begin_of_text|>"), []
    for role, content in KNOWN_CHAT:
        ids += text(f"<|start_header_id|>{role}<|end_header_id|>\n\n")
        mask += [0] * (len(ids) - len(mask))
        ids += text(content) + [EOT]
        mask += [int(role == "assistant")] * (len(ids) - len(mask))
    expected_labels = [i if m else -100 for i, m in zip(ids, mask)]

    rows = [row for row in trainer.train_dataset if row["input_ids"] == ids]
    assert len(rows) == 1, "the known conversation is in the tiny mixture"
    assert rows[0]["labels"] == expected_labels
    shorter = min(trainer.train_dataset, key=lambda row: len(row["input_ids"]))
    batch = trainer.data_collator([rows[0], shorter])
    assert batch["labels"][0].tolist() == expected_labels
    n = len(shorter["input_ids"])
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (len(ids) - n)
    assert (batch["labels"][1, n:] == -100).all()
    assert bytes(i for i in batch["input_ids"][0][batch["labels"][0] != -100].tolist()) == b"Hi!\xc0Hallo!\xc0"
    assert int(batch["word_lengths"][1].sum()) == n and int(batch["word_lengths"][0].sum()) == len(ids)


def test_sft_counts_truncated_conversations(sft_run, tiny_hat):
    from hat.recipes.data import DataSource, load_mixture
    from hat.tokenizer import HATTokenizer

    trainer, _, messages, _ = sft_run
    tokenizer = HATTokenizer.from_pretrained(tiny_hat)
    sources = [DataSource("json", data_files=str(DATA / f"chat_{lang}.jsonl"), probability=0.5) for lang in ("en", "de")]
    mixture = load_mixture(sources, columns=("messages",), seed=0)
    lengths = [len(tokenizer.apply_chat_template(m)["input_ids"]) for m in mixture["messages"]]
    over = sum(n > SFT_MAX_LENGTH for n in lengths)
    assert over > 0
    assert any(f"{over} of {len(lengths)} conversations are longer than max_length ({SFT_MAX_LENGTH} bytes)" in m
               for m in messages)  # fmt: skip
    assert all(len(row["input_ids"]) <= SFT_MAX_LENGTH for row in trainer.train_dataset)


@pytest.mark.parametrize("flag", ["--padding_free", "--packing"])
def test_packed_batches_are_refused(tiny_hat, tmp_path, flag):
    with pytest.raises(ValueError, match="padding-free"):
        run_recipe("sft", tiny_hat, tmp_path / "out", flag, "true")
