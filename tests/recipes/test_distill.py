"""recipes/distill.py: next-byte targets from a next-token distribution, and the loss terms."""

from __future__ import annotations

import random

import pytest
import torch

from hat.recipes.alignment import token_spellings
from hat.recipes.distill import SpellingTrie, byte_distillation, chunk_distillation, state_matching
from tests.helpers.source_tokenizer import byte_level_bpe


def brute_force(spellings, probs, prefix: bytes) -> torch.Tensor:
    """P(next byte | prefix) from the tokens that extend `prefix`, by enumeration."""
    out = torch.zeros(256, dtype=torch.float64)
    for v, s in enumerate(spellings):
        if s.startswith(prefix) and len(s) > len(prefix):
            out[s[len(prefix)]] += probs[v].double()
    return (out / out.sum()).float()


def test_byte_targets_are_the_token_marginals():
    spellings = token_spellings(byte_level_bpe())
    trie = SpellingTrie(spellings)
    rng = random.Random(0)
    logits = torch.randn(4, len(spellings)) * 4  # peaked: small ranges must keep their mass (float64 sums)
    cases = []
    while len(cases) < 300:
        v = rng.randrange(len(spellings))
        if spellings[v]:
            cases.append((rng.randrange(4), v, rng.randrange(len(spellings[v]))))
    rows, tokens, offsets = (torch.tensor(c) for c in zip(*cases))
    nodes = trie.node(tokens, offsets)
    assert (nodes >= 0).all()
    targets = trie.byte_targets(logits, rows, nodes)
    probs = torch.softmax(logits, -1)
    for i, (r, v, j) in enumerate(cases):
        torch.testing.assert_close(targets[i], brute_force(spellings, probs[r], spellings[v][:j]), atol=1e-6, rtol=0)
    torch.testing.assert_close(trie.byte_targets(logits, rows, nodes, chunk_rows=3), targets)  # chunked: the same
    # j = 0 is the first-byte marginal: every first byte of the vocabulary, weighted by its tokens' probability
    first = trie.byte_targets(logits[:1], torch.tensor([0]), trie.node(torch.tensor([cases[0][1]]), torch.tensor([0])))
    torch.testing.assert_close(first[0], brute_force(spellings, probs[0], b""), atol=1e-6, rtol=0)
    # offsets outside a spelling have no node
    assert trie.node(torch.tensor([cases[0][1]]), torch.tensor([len(spellings[cases[0][1]])])).item() == -1


def test_each_loss_is_zero_exactly_where_student_equals_teacher():
    torch.manual_seed(0)
    targets = torch.softmax(torch.randn(6, 256), -1)
    assert byte_distillation(targets.log(), targets).abs() < 1e-6
    assert byte_distillation(torch.randn(6, 256), targets) > 0.1
    sharp = torch.zeros(6, 256)
    sharp[torch.arange(6), torch.arange(6)] = 1.0  # one-hot targets: 0 log 0 counts as 0
    assert byte_distillation(torch.where(sharp > 0, 0.0, -1e4), sharp).abs() < 1e-6

    states = torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert state_matching(states, states.clone(), mask) == 0
    other = states.clone()
    other[0, 1] += 3.0
    assert state_matching(states, other, mask) == pytest.approx(3.0 / 10)  # one of 10 positions, L2 / sqrt(d) = 3
    mask[0, 1] = False
    assert state_matching(states, other, mask) == 0  # masked positions do not count

    logp = -torch.rand(3, 4) * 5
    ok = torch.ones(3, 4, dtype=torch.bool)
    assert chunk_distillation(logp, logp.clone(), ok).abs() < 1e-6
    assert chunk_distillation(logp - 1.0, logp, ok) > 0  # a student that finds the chunks less likely
