"""Checks of the recipes' data, run on every source before the model loads (`load_mixture(..., check=...)`).

    from hat.recipes.checks import check_chats, check_preferences, check_texts
    load_mixture(sources, columns=("text",), check=check_texts)

A check reads a source's rows (all of them; the first `STREAMED_ROWS` of a streamed source) and raises a
`ValueError` naming the file and line of the first bad one (`hat.recipes.data.row_place`), so bad data stops the
run before the model is loaded, not deep inside the Trainer with a message about something else:
- `text` (pretraining): a string. Empty and null texts are skipped like blank lines (nulls are counted in a
  warning); a source with no text at all is refused.
- `messages` (SFT): a non-empty list of turns `{"role": str, "content": str}` (content may also be a list of
  `{"type": "text", "text": str}` parts); with `assistant_only_loss`, at least one assistant turn.
- `chosen` / `rejected` / `prompt` (DPO): both completions plain text or both conversations. A plain-text pair needs
  a string `prompt` (the user turn the completions answer); a conversational pair without one needs a shared first
  turn, since TRL takes the turns both conversations start with as the prompt. Pairs with chosen == rejected train
  with zero gradient: they are counted in a warning, not refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import datasets

logger = logging.getLogger(__name__)

STREAMED_ROWS = 1000  # rows of a streamed source checked up front; a web-scale stream cannot be read before training
Place = Callable[[int | None], str]


def _rows(dataset: datasets.Dataset | datasets.IterableDataset) -> Iterator[tuple[int, dict]]:
    """(index, row) over the rows a check reads, a batch of columns at a time."""
    if isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.take(STREAMED_ROWS)
    index = 0
    for batch in dataset.iter(batch_size=1000):
        names = list(batch)
        for values in zip(*batch.values()):
            yield index, dict(zip(names, values))
            index += 1


def _complete(dataset: datasets.Dataset | datasets.IterableDataset, n_read: int) -> bool:
    """Whether the check read the whole source."""
    return isinstance(dataset, datasets.Dataset) or n_read < STREAMED_ROWS


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def check_texts(dataset: datasets.Dataset | datasets.IterableDataset, place: Place) -> None:
    """Pretraining rows: `text` is a string (empty and null are skipped); some row has text.

    Raises:
        ValueError: a text that is not a string (named by file and line), or a source whose texts are all empty.
            (Arrow holds only valid UTF-8: a lone surrogate in a file is reported when the file is read.)
    """
    n = nulls = empty = 0
    first_null = None
    for i, row in _rows(dataset):
        n += 1
        text = row["text"]
        if text is None:
            nulls += 1
            first_null = i if first_null is None else first_null
        elif not isinstance(text, str):
            raise ValueError(f"{place(i)}: `text` is {_describe(text)}, not a string")
        elif not text:
            empty += 1
    if nulls:
        logger.warning(f"{place(None)}: {nulls} of {n} rows have no text (null; the first at {place(first_null)}); "
                       "they are skipped like empty texts")
    if _complete(dataset, n) and empty + nulls == n:
        raise ValueError(f"{place(None)}: all {n} texts are empty: there is nothing to train on")


def _is_text_part(part) -> bool:
    """`{"type": "text", "text": str}`: a part of a message's content in the OpenAI format."""
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _conversation_problem(value, name: str) -> str | None:
    """What is wrong with a conversation (a list of `{"role", "content"}` turns), or None."""
    if value is None:
        return f"`{name}` is missing (null)"
    if not isinstance(value, list):
        return f"`{name}` is {_describe(value)}, not a list of {{role, content}} turns"
    if not value:
        return f"`{name}` is an empty conversation"
    for j, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not turn["role"]:
            return f"`{name}[{j}]` needs a `role` string, got {_describe(turn)}"
        content = turn.get("content")
        if isinstance(content, str):
            continue
        if isinstance(content, list) and all(_is_text_part(part) for part in content):
            continue
        return (f"`{name}[{j}]` ({turn['role']}): `content` is {_describe(content)}; it must be a string or a list of "
                '{"type": "text", "text": ...} parts')
    return None


def check_chats(
    dataset: datasets.Dataset | datasets.IterableDataset, place: Place, assistant_only_loss: bool = True
) -> None:
    """SFT rows: `messages` is a conversation; with `assistant_only_loss`, one with an assistant turn.

    Raises:
        ValueError: the first row that is not, named by file and line.
    """
    for i, row in _rows(dataset):
        messages = row["messages"]
        problem = _conversation_problem(messages, "messages")
        if problem is None and assistant_only_loss and not any(turn["role"] == "assistant" for turn in messages):
            problem = ("`messages` has no assistant turn: with `assistant_only_loss` the loss is on assistant bytes "
                       "only, and this conversation has none")
        if problem is not None:
            raise ValueError(f"{place(i)}: {problem}")


def _pair_problem(chosen, rejected, prompt) -> str | None:
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None:
            return f"`{name}` is missing (null)"
        if not isinstance(value, (str, list)):
            return f"`{name}` is {_describe(value)}; it must be a string or a list of {{role, content}} turns"
    if isinstance(chosen, str) != isinstance(rejected, str):
        return "`chosen` and `rejected` must both be plain text or both be conversations"
    if isinstance(chosen, str):
        if prompt is None:
            return ("a plain-text pair needs a `prompt`: without one there is no user turn for the completions to "
                    "answer (conversational pairs may leave it out)")
        if not isinstance(prompt, str):
            return f"`prompt` is {_describe(prompt)}; a plain-text pair needs a string prompt"
        return None
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if (problem := _conversation_problem(value, name)) is not None:
            return problem
    if isinstance(prompt, list):  # else TRL takes the turns both conversations start with as the prompt
        return _conversation_problem(prompt, "prompt")
    if prompt is not None and not isinstance(prompt, str):
        return f"`prompt` is {_describe(prompt)}; it must be a string or a list of {{role, content}} turns"
    if chosen[0] != rejected[0]:
        return ("`chosen` and `rejected` share no first turn and there is no conversational `prompt`: TRL takes the "
                "turns both start with as the prompt, and would find none")
    return None


def check_preferences(dataset: datasets.Dataset | datasets.IterableDataset, place: Place) -> None:
    """DPO rows: `chosen` / `rejected` (and an optional `prompt`) form a pair TRL can train; chosen == rejected is
    counted in a warning.

    Raises:
        ValueError: the first pair that does not, named by file and line.
    """
    n = same = 0
    first_same = None
    for i, row in _rows(dataset):
        n += 1
        chosen, rejected = row["chosen"], row["rejected"]
        problem = _pair_problem(chosen, rejected, row.get("prompt"))
        if problem is not None:
            raise ValueError(f"{place(i)}: {problem}")
        if chosen == rejected:
            same += 1
            first_same = i if first_same is None else first_same
    if same:
        logger.warning(
            f"{place(None)}: {same} of {n} pairs have chosen == rejected (the first at {place(first_same)}); "
            "they train with zero gradient"
        )
