"""hat.recipes.checks: every recipe checks its data before the model loads and names the file and line of the first
bad row; chosen == rejected is a warning with the count."""

from __future__ import annotations

import logging

import datasets
import pytest

from hat.recipes.checks import STREAMED_ROWS, check_chats, check_preferences, check_texts
from tests.helpers.recipes import run_on, write_jsonl

USER, ASSISTANT = {"role": "user", "content": "Wie spät ist es?"}, {"role": "assistant", "content": "Zwölf."}


def place(row):
    return "the source" if row is None else f"row {row}"


def expect_error(stage, tiny_hat, tmp_path, rows, message, **changes):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError) as error:
        run_on(stage, tiny_hat, tmp_path, str(data), **changes)
    assert str(error.value) == message.format(data=data)


def expect_warning(stage, tiny_hat, tmp_path, caplog, rows, message):
    """The check passes and warns; the run then stops where the model would load (the `no_model` fixture)."""
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    caplog.set_level(logging.WARNING, logger="hat.recipes.checks")
    with pytest.raises(AssertionError, match="model was loaded"):
        run_on(stage, tiny_hat, tmp_path, str(data))
    assert message.format(data=data) in [r.getMessage() for r in caplog.records]


# ----------------------------------------------------------------------------------------------------------
# Pretraining text
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"text": "Hallo."}, {"text": 2}], "{data}:2: `text` is int 2, not a string"),
        ([{"text": "Hallo."}, {"text": ["x"]}], "{data}:2: `text` is list ['x'], not a string"),
        ([{"text": "Hallo."}, {"text": {"de": "x"}}], "{data}:2: `text` is dict {{'de': 'x'}}, not a string"),
        ([{"text": ""}, {"text": ""}], "dataset {data}[train]: all 2 texts are empty: there is nothing to train on"),
        ([{"text": None}, {"text": ""}], "dataset {data}[train]: all 2 texts are empty: there is nothing to train on"),
    ],
    ids=["int", "list", "dict", "all-empty", "null-and-empty"],
)
def test_pretrain_text_errors(tiny_hat, tmp_path, no_model, rows, message, streaming):
    expect_error("pretrain", tiny_hat, tmp_path, rows, message, streaming=streaming)


def test_pretrain_null_texts_are_counted(tiny_hat, tmp_path, no_model, caplog):
    rows = [{"text": "Hallo Welt."}, {"text": None}, {"text": "Hi."}, {"text": None}]
    expect_warning("pretrain", tiny_hat, tmp_path, caplog, rows,
                   "dataset {data}[train]: 2 of 4 rows have no text (null; the first at {data}:2); they are skipped "
                   "like empty texts")  # fmt: skip


def test_texts_unit():
    check_texts(datasets.Dataset.from_list([{"text": ""}, {"text": "x"}]), place)  # one text is enough
    # a streamed source is read only up to STREAMED_ROWS: emptiness beyond that is unknown, so not refused
    stream = datasets.Dataset.from_list([{"text": ""}] * (STREAMED_ROWS + 1)).to_iterable_dataset()
    check_texts(stream, place)
    with pytest.raises(ValueError, match="all 3 texts are empty"):
        check_texts(datasets.Dataset.from_list([{"text": ""}] * 3).to_iterable_dataset(), place)


# ----------------------------------------------------------------------------------------------------------
# SFT conversations
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"messages": [USER, ASSISTANT]}, {"messages": [USER]}],
         "{data}:2: `messages` has no assistant turn: with `assistant_only_loss` the loss is on assistant bytes only, "
         "and this conversation has none"),
        ([{"messages": [USER, ASSISTANT]}, {"messages": []}], "{data}:2: `messages` is an empty conversation"),
        ([{"messages": [{"role": "user", "content": 3}, ASSISTANT]}],
         '{data}:1: `messages[0]` (user): `content` is int 3; it must be a string or a list of {{"type": "text", '
         '"text": ...}} parts'),
        ([{"messages": [USER, ASSISTANT]}, {"messages": "Hallo"}],
         "{data}:2: `messages` is str 'Hallo', not a list of {{role, content}} turns"),
        ([{"messages": [{"content": "hi"}, ASSISTANT]}],
         "{data}:1: `messages[0]` needs a `role` string, got dict {{'content': 'hi'}}"),
    ],
    ids=["no-assistant", "empty", "int-content", "not-a-list", "no-role"],
)  # fmt: skip
def test_sft_conversation_errors(tiny_hat, tmp_path, no_model, rows, message):
    expect_error("sft", tiny_hat, tmp_path, rows, message)


def test_chats_unit():
    parts = {"role": "user", "content": [{"type": "text", "text": "Hallo"}, {"type": "text", "text": " Welt"}]}
    mixed = datasets.Dataset.from_list([{"messages": [parts, ASSISTANT]}], on_mixed_types="use_json")
    check_chats(mixed, place)  # text parts are content
    check_chats(datasets.Dataset.from_list([{"messages": [USER]}]), place, assistant_only_loss=False)
    image = {"role": "user", "content": [{"type": "image", "url": "x.png"}]}
    with pytest.raises(ValueError, match=r"^row 0: `messages\[0\]` \(user\): `content` is list"):
        check_chats(datasets.Dataset.from_list([{"messages": [image, ASSISTANT]}], on_mixed_types="use_json"), place)


# ----------------------------------------------------------------------------------------------------------
# DPO pairs
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"chosen": "Rom.", "rejected": "Paris."}],
         "{data}:1: a plain-text pair needs a `prompt`: without one there is no user turn for the completions to "
         "answer (conversational pairs may leave it out)"),
        ([{"prompt": "Q?", "chosen": "Rom.", "rejected": [ASSISTANT]}],
         "{data}:1: `chosen` and `rejected` must both be plain text or both be conversations"),
        ([{"chosen": [USER, ASSISTANT], "rejected": [{"role": "user", "content": "Anders?"}, ASSISTANT]}],
         "{data}:1: `chosen` and `rejected` share no first turn and there is no conversational `prompt`: TRL takes "
         "the turns both start with as the prompt, and would find none"),
        ([{"prompt": "Q?", "chosen": "Rom.", "rejected": None}], "{data}:1: `rejected` is missing (null)"),
        ([{"prompt": [USER], "chosen": [], "rejected": [ASSISTANT]}], "{data}:1: `chosen` is an empty conversation"),
    ],
    ids=["plain-no-prompt", "mixed-formats", "no-shared-turn", "null", "empty-chosen"],
)  # fmt: skip
def test_dpo_pair_errors(tiny_hat, tmp_path, no_model, rows, message):
    expect_error("dpo", tiny_hat, tmp_path, rows, message)


def test_dpo_identical_pairs_are_a_warning(tiny_hat, tmp_path, no_model, caplog):
    rows = [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}, {"prompt": "Q?", "chosen": "A.", "rejected": "A."},
            {"prompt": "R?", "chosen": "C.", "rejected": "C."}]  # fmt: skip
    expect_warning("dpo", tiny_hat, tmp_path, caplog, rows,
                   "dataset {data}[train]: 2 of 3 pairs have chosen == rejected (the first at {data}:2); they train "
                   "with zero gradient")  # fmt: skip


def test_preferences_unit():
    shared = [USER, ASSISTANT]  # a conversational pair without prompt: TRL's prompt is the shared first turn
    check_preferences(datasets.Dataset.from_list([{"chosen": shared, "rejected": [USER, {"role": "assistant", "content": "Eins."}]}]), place)
    check_preferences(datasets.Dataset.from_list([{"prompt": "", "chosen": "A", "rejected": "B"}]), place)
