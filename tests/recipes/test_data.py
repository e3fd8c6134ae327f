"""hat.recipes.data: loading sources and mixtures, naming a bad file's line, packing text at word boundaries."""

from __future__ import annotations

import pytest

from hat.recipes.data import DataSource, load_mixture, pack_words, preference_as_chat, row_place, unreadable_file
from tests.helpers.recipes import EOT, run_on, write_jsonl


# ----------------------------------------------------------------------------------------------------------
# Packing and formats
# ----------------------------------------------------------------------------------------------------------
def test_pack_words_cuts_at_word_boundaries():
    from hat.splitter import split_words

    docs = ["Der Fluss fließt an der alten Mühle vorbei.", "", "Short.", "A " * 40 + "end."]
    sequences = pack_words(docs, max_length_bytes=24, max_word_size=10, eos_id=EOT)
    stream = b"".join(bytes(s) for s in sequences)
    assert stream == b"".join(d.encode() + bytes([EOT]) for d in docs if d)  # nothing lost, each doc ends in eos
    assert all(len(s) <= 24 for s in sequences)
    words = [w for d in docs if d for w in [*split_words(d, 10), bytes([EOT])]]
    starts = {sum(map(len, words[:i])) for i in range(len(words))}
    offsets = [sum(map(len, sequences[:i])) for i in range(len(sequences))]
    assert set(offsets) <= starts  # every sequence starts at a word
    with pytest.raises(ValueError, match="max_length_bytes"):
        pack_words(docs, max_length_bytes=8, max_word_size=10, eos_id=EOT)
    assert pack_words(["Hi.", None, ""], max_length_bytes=24, max_word_size=10, eos_id=EOT) == [[72, 105, 46, EOT]]
    with pytest.raises(ValueError, match=r"a `text` value is int \(3\), not a string"):
        pack_words(["Hi.", 3], max_length_bytes=24, max_word_size=10, eos_id=EOT)


def test_preference_as_chat():
    plain = {"prompt": "Q?", "chosen": "A.", "rejected": "B."}
    assert preference_as_chat(plain) == {
        "prompt": [{"role": "user", "content": "Q?"}],
        "chosen": [{"role": "assistant", "content": "A."}],
        "rejected": [{"role": "assistant", "content": "B."}],
    }
    chat = {"chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], "rejected": []}
    assert preference_as_chat(chat) is chat


# ----------------------------------------------------------------------------------------------------------
# Where a row is
# ----------------------------------------------------------------------------------------------------------
def test_row_place_names_file_and_line(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"text": "one"}\n\n{"text": "two"}\n')  # a blank line: row 1 is on line 3
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "three"}, {"text": "four"}])
    source = DataSource("json", data_files=[str(a), str(b)])
    assert [row_place(source, i) for i in range(4)] == [f"{a}:1", f"{a}:3", f"{b}:1", f"{b}:2"]
    assert row_place(DataSource("json", data_files=str(tmp_path / "*.jsonl")), 3) == f"{b}:2"  # globs, sorted
    (tmp_path / "lines.txt").write_text("x\n\ny\n")
    assert row_place(DataSource("text", data_files=str(tmp_path / "lines.txt")), 2) == f"{tmp_path / 'lines.txt'}:3"
    (tmp_path / "rows.json").write_text('[{"text": "x"}, {"text": "y"}]')
    assert row_place(DataSource("json", data_files=str(tmp_path / "rows.json")), 1) == f"{tmp_path / 'rows.json'}, row 2"
    hub = DataSource("HuggingFaceFW/fineweb-edu", name="sample-10BT")
    assert row_place(hub, 7) == "dataset HuggingFaceFW/fineweb-edu (sample-10BT)[train], row 8"
    assert row_place(hub, None) == "dataset HuggingFaceFW/fineweb-edu (sample-10BT)[train]"


def test_unreadable_file_names_the_byte_or_the_json_error(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "ok"}])
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"fine line\n" + "Größe\n".encode() + b"\x9b\x00\xff rest\n")
    assert unreadable_file(DataSource("text", data_files=[str(good), str(binary)])) == (
        f"{binary}:3: not UTF-8 text (byte 0x9b at offset 18); is it a binary file?"
    )
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    assert unreadable_file(DataSource("json", data_files=str(broken))).startswith(f"{broken}:2: not valid JSON (")
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"text": "a"}\n{"text": "a\\ud800b"}\n')
    assert unreadable_file(DataSource("json", data_files=str(surrogate))) == (
        f"{surrogate}:2: a string holds a lone surrogate (U+D800), which is not text"
    )
    assert unreadable_file(DataSource("json", data_files=str(good))) is None


# ----------------------------------------------------------------------------------------------------------
# Bad sources stop a recipe before its model loads, naming the file
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage, rows, match",
    [
        ("pretrain", [{"content": "text under the wrong name"}], r"has no column \['text'\]; its columns are \['content'\]"),
        ("sft", [{"conversation": [{"role": "user", "content": "hi"}]}], r"has no column \['messages'\]"),
        ("dpo", [{"prompt": "Q?", "chosen": "A."}], r"has no column \['rejected'\]"),
        ("sft", [], r"is empty"),
    ],
)
def test_bad_datasets_fail_clearly(tiny_hat, tmp_path, no_model, stage, rows, match):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        run_on(stage, tiny_hat, tmp_path, str(data))


def test_empty_text_file_fails_clearly(tiny_hat, tmp_path, no_model):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        run_on("pretrain", tiny_hat, tmp_path, str(tmp_path / "empty.txt"), path="text")


@pytest.mark.parametrize("streaming", [False, True])
def test_binary_text_file_is_named(tiny_hat, tmp_path, no_model, streaming):
    good, binary = tmp_path / "good.txt", tmp_path / "binary.txt"
    good.write_text("Ein guter Satz.\n")
    binary.write_bytes(b"first line\n\xc3\x28 not UTF-8\n")
    with pytest.raises(ValueError) as error:
        run_on("pretrain", tiny_hat, tmp_path, [str(good), str(binary)], path="text", streaming=streaming)
    assert str(error.value).endswith(f"{binary}:2: not UTF-8 text (byte 0xc3 at offset 11); is it a binary file?")


def test_malformed_json_line_is_named(tiny_hat, tmp_path, no_model):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}\n'
                    '{"messages": [{"role": "user", "content": "hi"}\n')  # fmt: skip
    with pytest.raises(ValueError, match=rf"{data}:2: not valid JSON \("):
        run_on("sft", tiny_hat, tmp_path, str(data))


def test_mixture_of_local_files(tmp_path):
    """Two sources interleave by probability; an optional column survives only where both have it."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}", "id": i} for i in range(20)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(20)])
    mixture = load_mixture([DataSource("json", data_files=str(a), probability=0.5),
                            DataSource("json", data_files=str(b), probability=0.5)],
                           columns=("text",), optional_columns=("id",), seed=0)  # fmt: skip
    assert mixture.column_names == ["text"]
    texts = mixture["text"]
    assert {t[0] for t in texts} == {"a", "b"} and len(texts) == len(set(texts))  # both sources, nothing repeated
    with pytest.raises(ValueError, match="probabilities must be positive"):
        load_mixture([DataSource("json", data_files=str(a), probability=0)], columns=("text",))
    with pytest.raises(ValueError, match="no datasets given"):
        load_mixture([], columns=("text",))
