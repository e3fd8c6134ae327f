from pathlib import Path

import pytest

from tests.helpers.recipes import save_tiny_hat, save_tiny_hat_with_teacher


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


@pytest.fixture(scope="session")
def tiny_hat_teacher(tmp_path_factory) -> Path:
    """A HAT converted from a tiny Llama, with the teacher files (`teacher/`)."""
    return save_tiny_hat_with_teacher(tmp_path_factory.mktemp("tiny-hat-teacher"))
