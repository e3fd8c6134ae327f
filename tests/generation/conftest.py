import pytest

from .helpers import make_model


@pytest.fixture(scope="module")
def model():
    return make_model(4.0)


@pytest.fixture(scope="module")
def tokenizer():
    from hat.tokenizer import build_tokenizer

    return build_tokenizer()
