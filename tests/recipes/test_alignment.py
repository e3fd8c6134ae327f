"""recipes/alignment.py: HAT words and Llama tokens from byte offsets, with real tokenizers."""

from __future__ import annotations

import pytest
import torch

from hat.recipes.alignment import align_batch, teacher_special_ids, token_spellings
from hat.splitter import split_words, word_lengths_batch
from tests.helpers.source_tokenizer import byte_level_bpe

SAMPLES = {
    "english": "Hello, world! The river's banks don't flood in 2024.",
    "german": "Der Fluss fließt über die Straße; Grüße aus Köln.",
    "emoji": "Party 🎉🎉 with 👩🏽‍💻 and 🇩🇪 flags 😀!",
    "code": "def get_user(self, user_id: int) -> str:\n\treturn self.users[user_id]",
    "whitespace": "a   b\t\tc\n\n\nd    \r\n e",
}


@pytest.fixture(scope="module", params=["llama3", "smollm2", "tiny-bpe"])
def tokenizer(request):
    if request.param == "llama3":
        from hat.eval.intrinsic import load_llama3_tokenizer

        return load_llama3_tokenizer()
    if request.param == "smollm2":
        from transformers import AutoTokenizer

        from hat.convert.gguf_io import default_source

        src = default_source()
        return AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    return byte_level_bpe()


def test_spellings_reproduce_the_text_and_alignment_is_exact(tokenizer):
    spellings = token_spellings(tokenizer)
    for name, text in SAMPLES.items():
        data = text.encode("utf-8")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(spellings[i] for i in ids) == data, name  # byte-level BPE: every token's exact bytes
        lengths = word_lengths_batch([data])
        batch = align_batch([data], lengths, tokenizer, spellings, {})
        n = int(batch.token_mask.sum())
        assert batch.token_ids[0, :n].tolist() == ids
        token_ends = torch.tensor([len(spellings[i]) for i in ids]).cumsum(0).tolist()
        word_ends = torch.tensor(lengths[0]).cumsum(0).tolist()
        for w, end in enumerate(word_ends):  # aligned exactly where a word's end is a token's end
            t = int(batch.word_token[0, w])
            assert (t >= 0) == (end in token_ends), (name, w)
            if t >= 0:
                assert token_ends[t] == end
        for q in range(len(data)):  # every byte lies in the token the alignment names, from its start
            t, start = int(batch.byte_token[0, q]), int(batch.byte_token_start[0, q])
            assert start == (token_ends[t - 1] if t else 0) and start <= q < token_ends[t], (name, q)


def test_known_words(tokenizer):
    spellings = token_spellings(tokenizer)
    data = "Hello, world! I don't know.".encode()
    words = split_words(data.decode())
    assert words == [b"Hello,", b" world!", b" I", b" don'", b"t", b" know."]
    batch = align_batch([data], word_lengths_batch([data]), tokenizer, spellings, {})
    aligned = [bool(t >= 0) for t in batch.word_token[0].tolist()]
    # "Hello," " world!" " I" end at token ends in every Llama-style tokenizer; " don'" ends inside "'t"
    assert aligned[:3] == [True, True, True] and aligned[3] is False


def test_special_bytes_become_the_teachers_tokens_and_rows_are_batched():
    from hat.eval.intrinsic import load_llama3_tokenizer

    tokenizer = load_llama3_tokenizer()
    spellings = token_spellings(tokenizer)
    special = teacher_special_ids(tokenizer, {"<|eot_id|>": 192})
    assert special == {192: tokenizer.convert_tokens_to_ids("<|eot_id|>")}
    rows = ["First doc.".encode() + bytes([192]) + "Zweites Dokument".encode(), "short".encode()]
    lengths = word_lengths_batch(rows, {192})
    batch = align_batch(rows, lengths, tokenizer, spellings, special)
    assert batch.token_ids.shape[0] == 2 and int(batch.token_mask[1].sum()) == len(tokenizer("short")["input_ids"])
    row0 = batch.token_ids[0, : int(batch.token_mask[0].sum())].tolist()
    assert row0.count(special[192]) == 1  # the end-of-text byte is one teacher token
    eot_word = 2  # "First", " doc.", <eot>, "Zweites", " Dokument"
    assert lengths[0][eot_word] == 1 and int(batch.word_token[0, eot_word]) == row0.index(special[192])
    assert (batch.word_token[1, len(lengths[1]):] == -1).all() and (batch.byte_token[1, len(rows[1]):] == -1).all()


def test_errors_name_the_problem():
    tokenizer = byte_level_bpe()
    spellings = token_spellings(tokenizer)
    with pytest.raises(ValueError, match="row 0: word lengths add up to 3 bytes, the row has 5"):
        align_batch([b"hello"], [[3]], tokenizer, spellings, {})
    with pytest.raises(ValueError, match="row 0: bytes 1-2 of a text piece are not valid UTF-8"):
        align_batch([b"a\xe2"], [[2]], tokenizer, spellings, {})
    with pytest.raises(ValueError, match="'<|start_header_id|>' .* has no counterpart"):
        teacher_special_ids(tokenizer, {"<|eot_id|>": 192, "<|start_header_id|>": 193})
