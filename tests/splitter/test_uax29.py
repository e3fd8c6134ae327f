"""hat.splitter.uax29: the exact engine on its own, and the override tables that make Unicode 17 the Rust crate's 16."""

import random

from hat.splitter import split_words, uax29
from tests.helpers.parity import first_mismatch, probe_code_points

from .reference import reference


def test_exact_engine_alone(corpus):
    """The fallback engine on its own is exact too (it normally sees only the rare hard regions)."""
    text = corpus[:150_000]
    words = [w.encode() for w in uax29._split_exact(text)]
    assert first_mismatch(words, reference(text, 10**9)) is None


def test_unicode_overrides():
    """The override tables: every overridden code point plus a seeded sample of all others, each
    split in 16 contexts, agree with hat-splitter."""
    overridden = {ord(c) for c in uax29._WB_OTHER_CHARS | uax29._EP_EXTRA_CHARS | uax29._P_DROP_CHARS | uax29._LL_EXTRA_CHARS}
    sample = random.Random(2).sample(range(0x110000), 12_000)
    code_points = sorted(overridden | set(sample) | set(range(0x300)))
    assert probe_code_points(code_points, split_words, reference) == []


