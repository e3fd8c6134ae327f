"""hat.eval.noise: seeded character noise and ALL CAPS, always valid UTF-8."""

from __future__ import annotations

import unicodedata

import pytest

from hat.eval.noise import NOISE_KINDS, all_caps, char_noise, perturb
from tests.helpers.text import UNICODE_SAMPLE


def test_noise_is_seeded_and_reproducible():
    text = "The quick brown fox jumps over the lazy dog, und der Igel läuft über die Straße. " * 4
    for kind in NOISE_KINDS:
        a, b = char_noise(text, kind, 0.2, seed=7), char_noise(text, kind, 0.2, seed=7)
        assert a == b and a != text
        assert char_noise(text, kind, 0.2, seed=8) != a
        assert char_noise(text, kind, 0.0, seed=7) == text
    assert char_noise(text, "drop", 1.0) == "".join(c for c in text if not c.isalpha())
    swapped = char_noise("abcdef", "swap", 1.0)
    assert sorted(swapped) == sorted("abcdef") and swapped != "abcdef"
    assert perturb(text, "clean") == text
    with pytest.raises(ValueError, match="noise kind"):
        char_noise(text, "shuffle", 0.1)
    with pytest.raises(ValueError, match="rate"):
        char_noise(text, "drop", 1.5)


def test_caps_and_noise_keep_valid_utf8():
    assert all_caps("Straße") == "STRASSE"
    assert all_caps("ß") == "SS"
    for kind in ("caps", *NOISE_KINDS):
        for seed in range(5):
            out = perturb(UNICODE_SAMPLE, kind, 0.3, seed)
            assert out.encode("utf-8").decode("utf-8") == out  # no lone surrogates, round-trips
            assert "👨" in out or kind != "caps"  # emoji are not letters: untouched
            assert all(unicodedata.category(c) != "Cs" for c in out)
