"""The Rust `hat-splitter` 0.1.10, which `hat.splitter` reproduces: importing this module skips the test module when
it is not installed."""

import pytest

from hat.splitter import split_words
from tests.helpers.parity import first_mismatch

hat_splitter = pytest.importorskip("hat_splitter")
REFERENCE = hat_splitter.HATSplitter()


def reference(text: str, max_word_size: int = 100) -> list[bytes]:
    return REFERENCE.split_with_limit(text, max_word_size)


def assert_parity(text: str, max_word_size: int = 100) -> None:
    report = first_mismatch(split_words(text, max_word_size), reference(text, max_word_size))
    assert report is None, report
