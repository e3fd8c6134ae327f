"""recipes/sft.py at tiny size: trains and saves, loss on assistant bytes only, truncation counted, word lengths from
the collator, packed and padding-free batches trained as if each conversation were alone."""

from __future__ import annotations

import logging
import math

import pytest

from hat.collator import HATDataCollator
from tests.helpers.recipes import (
    DATA, EOT, TINY, Records, assert_reloads, changed, is_inert, losses, run_recipe, weights, write_yaml,
)
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
def test_packed_batches_train_each_conversation_as_if_alone(tiny_hat, tmp_path, flag):
    """TRL's padding-free and packed batches: one row, position_ids restarting for each conversation. The collated
    batch carries each conversation's words; its logits are those of every conversation scored alone, the loss stays
    on the assistant bytes, and the run trains."""
    import torch

    # TRL enforces max_length only by packing: padding_free alone wants it unset
    config = write_yaml(TINY / "sft.yaml", tmp_path / "sft.yaml", **({"max_length": None} if flag == "--padding_free" else {}))
    trainer = run_recipe("sft", tiny_hat, tmp_path / "out", flag, "true", "--max_steps", "2", config=config)
    steps = losses(trainer.state.log_history)
    assert sorted(steps) == [1, 2] and all(math.isfinite(v) for v in steps.values())
    assert isinstance(trainer.data_collator, HATDataCollator)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    model = trainer.model.eval()
    with torch.no_grad(), splitter_calls() as calls:
        packed = model(**batch)
    assert calls == []  # the collator split every conversation
    cuts = batch["cu_seq_lens_q"].tolist()
    assert len(cuts) > 2  # more than one conversation in the row
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    with torch.no_grad():
        alone = [model(input_ids=ids[None, a:b]).logits[0] for a, b in zip(cuts, cuts[1:])]
    torch.testing.assert_close(packed.logits[0], torch.cat(alone), rtol=1e-5, atol=1e-5)
    # TRL's labels: no target across conversations; targets only on assistant bytes (each turn ends with eot)
    assert all(labels[a] == -100 for a in cuts[:-1])
    assert (labels[labels != -100] == EOT).sum() >= len(cuts) - 1
