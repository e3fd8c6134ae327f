"""hat.model.layout: where every byte and word sits, from word lengths given as lists or as the collator's tensor."""

import random

import pytest
import torch

from hat.model.layout import (
    build_layout, causal_mask, document_lengths, gather_words, packed_documents, packed_word_lengths,
)


def test_layout_bookkeeping():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])
    layout = build_layout([[2, 3], [1, 2]], mask)
    assert layout.byte_positions[0].tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert layout.byte_word[0, 2:].tolist() == [0, 0, 1, 1, 1]
    assert layout.word_bytes[0].tolist() == [[2, 3, 0], [4, 5, 6]]
    assert layout.word_bytes_valid[1].tolist() == [[True, False, False], [True, True, False]]
    assert layout.word_valid.tolist() == [[True, True], [True, True]]
    assert layout.word_lengths.tolist() == [[2, 3], [1, 2]]
    assert layout.word_positions.tolist() == [[0, 1], [0, 1]]


def random_batch(rng: random.Random) -> tuple[list[list[int]], torch.Tensor]:
    """Rows of random words, left or right padded, some empty."""
    B, T = rng.randint(1, 5), rng.randint(1, 30)
    mask = torch.zeros(B, T, dtype=torch.long)
    lengths = []
    for b in range(B):
        n = rng.randint(0, T)
        if rng.random() < 0.5:
            mask[b, T - n :] = 1
        else:
            mask[b, :n] = 1
        row = []
        while sum(row) < n:
            row.append(rng.randint(1, min(n - sum(row), 7)))
        lengths.append(row)
    return lengths, mask


def test_tensor_word_lengths_give_the_layout_of_lists():
    """The collator's (B, W) tensor, right-padded with 0, and lists give one layout, which matches the words."""
    rng = random.Random(0)
    for _ in range(100):
        lengths, mask = random_batch(rng)
        W = max(len(row) for row in lengths)
        tensor = torch.tensor([row + [0] * (W - len(row)) for row in lengths], dtype=torch.long).reshape(len(lengths), W)
        a, b = build_layout(lengths, mask), build_layout(tensor, mask)
        for name in ("word_lengths", "byte_valid", "byte_positions", "byte_word", "word_valid", "word_bytes",
                     "word_bytes_valid"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        for row, row_lengths in enumerate(lengths):  # every real byte of word w points back to word w
            cols = mask[row].nonzero().flatten().tolist()
            words = [w for w, n in enumerate(row_lengths) for _ in range(n)]
            assert a.byte_word[row, cols].tolist() == words
            for w, n in enumerate(row_lengths):
                assert a.word_bytes[row, w, :n].tolist() == cols[sum(row_lengths[:w]) : sum(row_lengths[: w + 1])]


def test_extra_zero_columns_are_empty_word_slots():
    mask = torch.tensor([[1, 1, 1, 1]])
    layout = build_layout(torch.tensor([[1, 3, 0, 0]]), mask)
    assert layout.word_valid.tolist() == [[True, True, False, False]]
    assert layout.byte_word.tolist() == [[0, 1, 1, 1]]


def test_a_batch_without_words_has_one_empty_word_slot():
    for lengths in ([[], []], torch.zeros(2, 0, dtype=torch.long)):
        layout = build_layout(lengths, torch.zeros(2, 3, dtype=torch.long))
        assert layout.word_valid.shape == (2, 1) and not layout.word_valid.any()
        assert layout.word_bytes.shape == (2, 1, 1)


@pytest.mark.parametrize("lengths, mask, message", [
    ([[1, 1]], [[1, 1, 1]], "row 0: word lengths add up to 2 bytes, the row has 3"),
    ([[3], [1, 2]], [[1, 1, 1], [0, 1, 1]], "row 1: word lengths add up to 3 bytes, the row has 2"),
    ([[2]], [[1, 0, 1]], "row 0: attention_mask must be one contiguous run"),
    ([[2, 0, 1]], [[1, 1, 1]], r"row 0: word lengths must be positive, then padded with 0, got \[2, 0, 1\]"),
    ([[4, -1]], [[1, 1, 1]], "must be positive"),
    ([[3], [3]], [[1, 1, 1]], r"word_lengths has 2 rows, the batch has 1|word_lengths must be \(1, words\)"),
])
def test_bad_word_lengths_name_the_row(lengths, mask, message):
    for given in (lengths, None):
        if given is None:  # the same as a tensor, where it has a rectangular shape
            W = max(len(row) for row in lengths)
            given = torch.tensor([row + [0] * (W - len(row)) for row in lengths])
        with pytest.raises(ValueError, match=message):
            build_layout(given, torch.tensor(mask))


def test_tensor_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"word_lengths must be \(2, words\), got shape \(3,\)"):
        build_layout(torch.tensor([1, 2, 3]), torch.ones(2, 3))


def test_layout_is_built_with_torch_ops_on_the_mask_device(monkeypatch):
    """No numpy round trip: the layout is computed by torch on the mask's device, with one host copy for the checks."""
    import numpy as np

    def no_numpy(*args, **kwargs):
        raise AssertionError("build_layout used numpy")

    monkeypatch.setattr(np, "asarray", no_numpy)
    monkeypatch.setattr(np, "zeros", no_numpy)
    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    layout = build_layout(torch.tensor([[2, 3, 0]]), torch.tensor([[1, 1, 1, 1, 1, 0]]))
    assert layout.byte_word.tolist() == [[0, 0, 1, 1, 1, 0]]


def test_masks_are_causal_windowed_and_skip_padding():
    mask = causal_mask(torch.tensor([[False, True, True, True, True]]), window=2)[0, 0]
    assert mask.tolist() == [
        [True, False, False, False, False],  # a padding query attends to itself only
        [False, True, False, False, False],
        [False, True, True, False, False],
        [False, False, True, True, False],  # window 2: itself and the one before
        [False, False, False, True, True],
    ]
    layout = build_layout([[1, 3]], torch.tensor([[0, 1, 1, 1, 1]]))
    additive = layout.byte_mask(2, torch.float32)[0, 0]
    assert ((additive == 0) == mask).all() and additive.min() == torch.finfo(torch.float32).min
    assert (layout.word_mask(torch.float32)[0, 0] == 0).tolist() == [[True, False], [True, True]]


def test_gather_words_picks_along_dim_1():
    x = torch.arange(2 * 4 * 3).reshape(2, 4, 3)
    index = torch.tensor([[[0, 3]], [[2, 2]]])  # (B, 1, 2)
    out = gather_words(x, index)
    assert out.shape == (2, 1, 2, 3)
    assert torch.equal(out[0, 0, 1], x[0, 3]) and torch.equal(out[1, 0, 0], x[1, 2])


def test_packed_documents_from_each_form():
    """position_ids restarting at 0 (transformers' rule: wherever they do not step by 1), cu_seq_lens, seq_idx: one
    reading of the same packed row."""
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 0]])
    expected = [[0, 0, 0, 1, 1, 2, 3]]
    assert packed_documents((1, 7), position_ids=position_ids).tolist() == expected
    cu = torch.tensor([0, 3, 5, 6, 7], dtype=torch.int32)
    assert packed_documents((1, 7), cu_seq_lens=cu).tolist() == expected
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 2, 3]])
    assert packed_documents((1, 7), seq_idx=seq_idx).tolist() == seq_idx.tolist()
    assert packed_documents((1, 7)) is None
    assert packed_documents((2, 3), position_ids=torch.arange(3).expand(2, 3)).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"cu_seq_lens must run from 0 to 7 \(one packed row\)"):
        packed_documents((1, 7), cu_seq_lens=torch.tensor([0, 3, 6]))
    with pytest.raises(ValueError, match=r"position_ids must be \(1, 7\), got shape \(1, 6\)"):
        packed_documents((1, 7), position_ids=position_ids[:, :6])


def test_packed_layout_restarts_positions_and_keeps_documents_apart():
    # Row 0: documents of 3 and 4 bytes (words 2+1 | 1+3); row 1: one document, left padded
    documents = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [5, 5, 6, 6, 6, 6, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])
    layout = build_layout([[2, 1, 1, 3], [2, 3]], mask, documents)
    assert layout.byte_positions.tolist() == [[0, 1, 2, 0, 1, 2, 3], [0, 0, 0, 1, 2, 3, 4]]
    assert layout.word_positions.tolist() == [[0, 1, 0, 1], [0, 1, 0, 0]]
    assert layout.first_words.tolist() == [[True, False, True, False], [True, False, False, False]]
    byte_mask = layout.byte_mask(16, torch.float32)[0, 0] == 0  # (T, T) allowed
    assert not byte_mask[3:, :3].any() and byte_mask[2, :3].all() and byte_mask[6, 3:].all()
    word_mask = layout.word_mask(torch.float32)[0, 0] == 0
    assert word_mask.tolist()[2] == [False, False, True, False] and word_mask.tolist()[3] == [False, False, True, True]
    # without documents, the same row is one document
    plain = build_layout([[2, 1, 1, 3], [2, 3]], mask)
    assert plain.first_words is None and plain.word_positions.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match=r"row 0: word 1 \(2 bytes\) spans two packed documents"):
        build_layout([[2, 2, 3]], mask[:1], documents[:1])


def test_packed_word_lengths_split_each_document_on_its_own():
    documents = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 2, 2, 2, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]])
    assert document_lengths(documents, mask) == [[3, 4], [3, 2]]
    rows = [list(b"abcdefg"), list(b"xyzuv")]
    split = lambda pieces: [[len(p)] for p in pieces]  # noqa: E731  (one word per document)
    assert packed_word_lengths(rows, document_lengths(documents, mask), split) == [[3, 4], [3, 2]]
