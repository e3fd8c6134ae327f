"""hat.generation.sampling: choosing the next byte, stop strings, which processors allow grouped sampling."""

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.generation import logits_process as lp

from hat.generation.sampling import groups_by_length, parse_stop_strings, row_wise, select_next, stop_string_hits


def test_select_next_is_argmax_or_a_seeded_draw_from_the_support():
    scores = torch.full((3, 256), float("-inf"))
    scores[0, 7], scores[1, [3, 200]], scores[2, 255] = 1.0, torch.tensor([0.0, 2.0]), 0.0
    assert select_next(scores, do_sample=False).tolist() == [7, 200, 255]
    draws = [select_next(scores, True, torch.Generator().manual_seed(s)) for s in range(30)]
    assert all(d[0] == 7 and d[1] in (3, 200) and d[2] == 255 for d in draws)
    assert {int(d[1]) for d in draws} == {3, 200}  # both bytes of row 1 drawn
    again = [select_next(scores, True, torch.Generator().manual_seed(s)) for s in range(30)]
    assert all(torch.equal(a, b) for a, b in zip(draws, again))


def test_stop_strings_are_utf8_bytes():
    assert parse_stop_strings(None) == []
    assert parse_stop_strings("wörld") == ["wörld".encode()]
    assert parse_stop_strings(["a", b"\xc0"]) == [b"a", b"\xc0"]
    with pytest.raises(ValueError, match="non-empty"):
        parse_stop_strings(["ok", ""])
    tails = [bytearray("Hallo wörld".encode()), bytearray("wör".encode()), bytearray(b"x\xc0")]
    assert stop_string_hits(tails, parse_stop_strings(["wörld", b"\xc0"])) == [True, False, True]


def test_rows_are_grouped_by_length():
    assert groups_by_length([3, 1, 3, 2, 1]) == {3: [0, 2], 1: [1, 4], 2: [3]}


def test_processors_with_per_batch_state_need_lockstep():
    assert row_wise(LogitsProcessorList([lp.TemperatureLogitsWarper(0.7), lp.TopKLogitsWarper(5)]))
    assert not row_wise(LogitsProcessorList([lp.TemperatureLogitsWarper(0.7),
                                             lp.RepetitionPenaltyLogitsProcessor(1.2)]))
