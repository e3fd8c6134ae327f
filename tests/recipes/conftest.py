from pathlib import Path

import pytest

from tests.helpers.recipes import save_tiny_hat


@pytest.fixture(scope="session")
def tiny_hat(tmp_path_factory) -> Path:
    """A seeded HATConfig.tiny() checkpoint with its tokenizer files."""
    return save_tiny_hat(tmp_path_factory.mktemp("tiny-hat"))


@pytest.fixture
def no_model(monkeypatch):
    """Bad data must stop a recipe before its model loads: loading one fails the test."""

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    for stage in ("pretrain", "sft", "dpo"):
        monkeypatch.setattr(f"hat.recipes.{stage}.load_model", load_model)
