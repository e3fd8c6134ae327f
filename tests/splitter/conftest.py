import pytest

from tests.helpers.text import mixed_text


@pytest.fixture(scope="session")
def corpus() -> str:
    """1.2 MB of seeded mixed text: prose (en/de), code, CJK, emoji, numbers, URLs, random Unicode."""
    return mixed_text(1_200_000, seed=0)
