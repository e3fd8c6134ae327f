"""Data for the recipes: dataset mixtures named in YAML, and pretraining sequences cut at word boundaries.

    from hat.recipes.data import DataSource, load_mixture, pack_words

    sources = [DataSource("HuggingFaceFW/fineweb-edu", name="sample-10BT", probability=0.5),        # English
               DataSource("json", data_files=["data/de.jsonl"], probability=0.5)]                   # German
    dataset = load_mixture(sources, columns=("text",), streaming=True, seed=0)
    pack_words(["Hallo Welt.", "Hi."], max_length_bytes=8, max_word_size=8, eos_id=192)
    # [[72, 97, 108, 108, 111], [32, 87, 101, 108, 116, 46, 192], [72, 105, 46, 192]]   ("Hallo", " Welt.<eot>", "Hi.<eot>")

Every length here is in bytes: a HAT reads bytes, so a byte is its token. Bad data is reported before the model
loads, naming the file and line (or row) of the first bad example: unreadable files here, bad rows by the checks
of `hat.recipes.checks` that each recipe passes to `load_mixture`.
"""

from __future__ import annotations

import codecs
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable

import datasets
import pyarrow

from hat.splitter import split_words

# A check of one source's rows (`hat.recipes.checks`): the dataset, and `place(i)` naming its row i (`place(None)`:
# the source) in messages
RowCheck = Callable[[datasets.Dataset | datasets.IterableDataset, Callable[[int | None], str]], None]


@dataclass
class DataSource:
    """One dataset of a mixture. The fields are `datasets.load_dataset`'s, plus its share and column renames.

    Args:
        path (`str`): a Hub dataset (`"HuggingFaceFW/fineweb-edu"`) or a builder for local files (`"json"` for
            json/jsonl, `"text"` for plain text with one example per line, `"parquet"`).
        name (`str`, *optional*): the dataset configuration (`"sample-10BT"`).
        data_files (`str` or `list[str]`, *optional*): local files, for the `"json"` / `"text"` / `"parquet"` builders.
        split (`str`, *optional*, defaults to `"train"`): the split to read.
        probability (`float`, *optional*, defaults to `1.0`): share of this source in the mixture; the shares of a
            mixture are normalised to sum to one.
        columns (`dict[str, str]`, *optional*): renames, source column -> the column the recipe reads, e.g.
            `{"messages_de": "messages"}`.
    """

    path: str
    name: str | None = None
    data_files: str | list[str] | None = None
    split: str = "train"
    probability: float = 1.0
    columns: dict[str, str] | None = None

    def describe(self) -> str:
        where = self.data_files if self.data_files is not None else self.path
        return f"{where}{f' ({self.name})' if self.name else ''}[{self.split}]"


@dataclass
class DataArguments:
    """The data keys every recipe YAML shares (`script_args` of the recipes).

    Args:
        datasets (`list[DataSource]`): the training mixture, e.g. one English and one German source.
        eval_datasets (`list[DataSource]`): the evaluation mixture (empty: no evaluation data).
        streaming (`bool`): stream the datasets instead of downloading them first (for web-scale pretraining text).
    """

    datasets: list[DataSource] = field(
        default_factory=list,
        metadata={"help": "Training mixture: a list of {path, name, data_files, split, probability, columns}."},
    )
    eval_datasets: list[DataSource] = field(
        default_factory=list, metadata={"help": "Evaluation mixture, same keys as `datasets`."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the datasets (IterableDataset)."})

    def __post_init__(self):
        # The YAML gives dicts (TrlParser sets them as the defaults as they are)
        self.datasets = [DataSource(**s) if isinstance(s, dict) else s for s in self.datasets]
        self.eval_datasets = [DataSource(**s) if isinstance(s, dict) else s for s in self.eval_datasets]


def load_source(
    source: DataSource,
    columns: Iterable[str],
    optional_columns: Iterable[str] = (),
    streaming: bool = False,
    check: RowCheck | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one source, apply its renames, keep only `columns` and those of `optional_columns` it has, and run
    `check` on its rows.

    Raises:
        ValueError: the source is empty, a file of it is not UTF-8 or not valid JSON (file and line named), it lacks
            one of `columns` (the message lists the columns it has), or `check` rejects a row.
    """
    try:
        ds = datasets.load_dataset(
            source.path, name=source.name, data_files=source.data_files, split=source.split, streaming=streaming
        )
        first = next(iter(ds), None)  # streamed datasets may not know their columns before the first example
    except READ_ERRORS as error:
        if (problem := _read_error(source, error)) is None:
            raise
        raise problem from None
    if first is None:
        raise ValueError(f"dataset {source.describe()} is empty")
    available = list(first)
    renames = source.columns or {}
    unknown = [c for c in renames if c not in available]
    if unknown:
        raise ValueError(f"dataset {source.describe()}: `columns` renames {unknown}, but its columns are {available}")
    if renames:
        ds = ds.rename_columns(renames)
        available = [renames.get(c, c) for c in available]
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(
            f"dataset {source.describe()} has no column {missing}; its columns are {available}. "
            f"Rename one with `columns: {{<name>: {missing[0]}}}` in the recipe's `datasets` entry."
        )
    ds = ds.select_columns([c for c in available if c in (*columns, *optional_columns)])
    if check is not None:
        try:
            check(ds, lambda row: row_place(source, row))
        except READ_ERRORS as error:  # a streamed source reads its later files only now
            if (problem := _read_error(source, error)) is None:
                raise
            raise problem from None
    return ds


READ_ERRORS = (StopIteration, datasets.exceptions.DatasetGenerationError, UnicodeDecodeError, pyarrow.ArrowInvalid)


def _read_error(source: DataSource, error: Exception) -> ValueError | None:
    """What to raise for a source that `datasets` could not read, naming the file and line; None: not known."""
    if isinstance(error, StopIteration) or isinstance(error.__cause__, datasets.arrow_writer.SchemaInferenceError):
        return ValueError(f"dataset {source.describe()} is empty")  # the json builder on an empty file; no example
    problem = unreadable_file(source)
    return None if problem is None else ValueError(f"dataset {source.describe()}: {problem}")


def load_mixture(
    sources: list[DataSource],
    columns: Iterable[str],
    optional_columns: Iterable[str] = (),
    streaming: bool = False,
    seed: int = 0,
    transform: Callable[[dict], dict] | None = None,
    check: RowCheck | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load `sources` and interleave them with their probabilities.

    The mixture draws each example from source i with probability p_i and stops when the first source runs out
    (`stopping_strategy="first_exhausted"`), so no source is repeated. Streamed mixtures are shuffled in a
    10,000-example buffer; map-style ones are shuffled by the trainer's sampler. An optional column survives only
    where every source has it (interleaving needs one schema).

    Args:
        sources (`list[DataSource]`): the sources; at least one.
        columns (`Iterable[str]`): columns every source must have (after its renames).
        optional_columns (`Iterable[str]`): further columns to keep.
        streaming (`bool`): return an `IterableDataset`.
        seed (`int`): seed of the interleaving and of the streaming shuffle.
        transform (`Callable`, *optional*): applied to every example of every source before interleaving, e.g. to
            bring sources of different formats to one (`preference_as_chat`).
        check (`RowCheck`, *optional*): run on each source's rows before `transform` (`hat.recipes.checks`).

    Raises:
        ValueError: no sources, a probability that is not positive, or a source that `load_source` or `check` rejects.
    """
    if not sources:
        raise ValueError("no datasets given: set `datasets` in the recipe YAML (a list of {path, ...})")
    bad = [s.describe() for s in sources if not s.probability > 0]
    if bad:
        raise ValueError(f"dataset probabilities must be positive, got {bad}")
    columns, optional_columns = tuple(columns), tuple(optional_columns)
    parts = [load_source(s, columns, optional_columns, streaming, check) for s in sources]
    if transform is not None:
        parts = [p.map(transform) for p in parts]
    if len(parts) == 1:
        mixture = parts[0]
    else:
        shared = [c for c in optional_columns if all(c in next(iter(p)) for p in parts)]
        parts = [p.select_columns([*columns, *shared]) for p in parts]
        total = sum(s.probability for s in sources)
        mixture = datasets.interleave_datasets(
            parts, probabilities=[s.probability / total for s in sources], seed=seed, stopping_strategy="first_exhausted"
        )
    if streaming:
        mixture = mixture.shuffle(seed=seed, buffer_size=10_000)
    return mixture


# ----------------------------------------------------------------------------------------------------------
# Naming the file and line of a bad example
# ----------------------------------------------------------------------------------------------------------
def local_files(source: DataSource) -> list[str] | None:
    """The local files of a source in the order `datasets` reads them (glob patterns expanded, sorted), or None
    when it has none (a Hub dataset) or one cannot be found."""
    if source.data_files is None:
        return None
    patterns = [source.data_files] if isinstance(source.data_files, str) else list(source.data_files)
    files = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not found or not all(os.path.isfile(f) for f in found):
            return None
        files += found
    return files


def _is_json_lines(source: DataSource, file: str) -> bool:
    return source.path == "json" and file.endswith((".jsonl", ".ndjson"))


def row_place(source: DataSource, row: int | None) -> str:
    """Where row `row` (0-based) of a source is: `"data/chat.jsonl:7"` (file and line) for local JSON-lines and text
    files, `"data/pairs.json, row 3"` for other local files, `"dataset <hub name>[split], row 8"` otherwise; with
    `row=None`, the source itself (`"dataset data/chat.jsonl[train]"`)."""
    if row is None:
        return f"dataset {source.describe()}"
    files = local_files(source)
    if not files:
        return f"dataset {source.describe()}, row {row + 1}"
    file, index = files[0], row
    if len(files) > 1:  # which file: count each one's rows (only ever done for a message)
        for file in files:
            n = datasets.load_dataset(source.path, data_files=file, split=source.split).num_rows
            if index < n:
                break
            index -= n
    if source.path == "text":  # one row per line, empty lines included
        return f"{file}:{index + 1}"
    if _is_json_lines(source, file):  # one row per non-blank line
        with open(file, encoding="utf-8") as f:
            rows = (n for n, line in enumerate(f, 1) if line.strip())
            line = next((n for i, n in enumerate(rows) if i == index), None)
        if line is not None:
            return f"{file}:{line}"
    return f"{file}, row {index + 1}"


def _json_problem(text: str) -> str | None:
    try:
        json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno})"
    except UnicodeEncodeError as error:  # Python's json reads "\\ud800"; Arrow (and UTF-8) refuse it
        return f"a string holds a lone surrogate (U+{ord(error.object[error.start]):04X}), which is not text"
    return None


def unreadable_file(source: DataSource) -> str | None:
    """The first local file of a source that is not UTF-8, or (JSON builder) not valid JSON, as `"file:line: what"`;
    None if every file reads (then the error that led here is something else)."""
    for file in local_files(source) or []:
        decoder, line, offset = codecs.getincrementaldecoder("utf-8")(), 1, 0
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:  # error.object: the bytes held back from the last chunk + chunk
                    at = offset - (len(error.object) - len(chunk)) + error.start
                    line += error.object.count(b"\n", 0, error.start)
                    return (f"{file}:{line}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {at}); "
                            "is it a binary file?")
                line += chunk.count(b"\n")
                offset += len(chunk)
        if source.path != "json":
            continue
        with open(file, encoding="utf-8") as f:
            text = f.read()
        if _json_problem(text) is None:  # one JSON document (a list of rows)
            continue
        for n, line in enumerate(text.splitlines(), 1):  # else JSON lines: the first line that does not parse
            if line.strip() and (problem := _json_problem(line)) is not None:
                return f"{file}:{n}: {problem}"
    return None


# ----------------------------------------------------------------------------------------------------------
# Pretraining text -> byte sequences
# ----------------------------------------------------------------------------------------------------------
def pack_words(texts: Iterable[str], max_length_bytes: int, max_word_size: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents, each followed by eos, and cut the byte stream into sequences at word boundaries.

    Every sequence holds at most `max_length_bytes` bytes and starts at the start of a word. Words come from the
    model's splitter (at most `max_word_size` bytes each), and eos is a one-byte word of its own, so no word ever
    spans two documents. A document longer than `max_length_bytes` continues in the next sequence: nothing is cut
    off. Empty and missing (`None`) documents are skipped.

    Raises:
        ValueError: `max_length_bytes` is smaller than `max_word_size`, so a word might not fit in a sequence, or a
            document is not a string.
    """
    if max_length_bytes < max_word_size:
        raise ValueError(f"max_length_bytes ({max_length_bytes}) must be at least max_word_size ({max_word_size})")
    eos = bytes([eos_id])
    sequences, current = [], bytearray()
    for text in texts:
        if not text:
            continue
        if not isinstance(text, str):
            raise ValueError(f"a `text` value is {type(text).__name__} ({repr(text)[:40]}), not a string")
        for word in [*split_words(text, max_word_size), eos]:
            if len(current) + len(word) > max_length_bytes:
                sequences.append(list(current))
                current = bytearray()
            current += word
    if current:
        sequences.append(list(current))
    return sequences


def pretraining_sequences(
    dataset: datasets.Dataset | datasets.IterableDataset, max_length_bytes: int, max_word_size: int, eos_id: int
) -> datasets.Dataset | datasets.IterableDataset:
    """A `text` dataset -> an `input_ids` dataset of `pack_words` sequences (1,000 documents packed at a time)."""

    def pack(batch):
        return {"input_ids": pack_words(batch["text"], max_length_bytes, max_word_size, eos_id)}

    kwargs = {} if isinstance(dataset, datasets.IterableDataset) else {"desc": "Cutting text into byte sequences"}
    return dataset.map(pack, batched=True, batch_size=1000, remove_columns=["text"], **kwargs)


def preference_as_chat(example: dict) -> dict:
    """A plain-text preference pair -> the same pair as a user turn and an assistant turn; conversational pairs
    (lists of `{"role", "content"}`) are returned as they are. DPO then trains every pair in the chat format the
    model answers in, and sources of both formats can be mixed."""
    if not isinstance(example["chosen"], str):
        return example
    out = {key: [{"role": "assistant", "content": example[key]}] for key in ("chosen", "rejected")}
    if "prompt" in example:
        out["prompt"] = [{"role": "user", "content": example["prompt"]}]
    return out


# ----------------------------------------------------------------------------------------------------------
# Length reports for SFT and DPO (TRL truncates; these count what it cuts)
# ----------------------------------------------------------------------------------------------------------
def chat_lengths(dataset: datasets.Dataset, tokenizer, num_proc: int | None = None) -> list[int]:
    """Bytes of each conversation of a `messages` dataset, as TRL's SFTTrainer will tokenize it."""

    def length(example):
        return {"n": len(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=True)["input_ids"])}

    return dataset.map(length, num_proc=num_proc, remove_columns=dataset.column_names, desc="Measuring conversations")["n"]


def preference_overflow(dataset: datasets.Dataset, max_length: int) -> int:
    """Number of examples of a DPO-prepared dataset (`prompt_ids`, `chosen_ids`, `rejected_ids`) whose prompt plus
    longer completion exceeds `max_length`: those DPOTrainer's collator cuts to their first `max_length` bytes."""
    longest = (
        len(p) + max(len(c), len(r))
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    )
    return sum(n > max_length for n in longest)
