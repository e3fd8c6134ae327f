"""hat.eval.loading: a missing checkpoint is named before anything loads."""

from __future__ import annotations

import pytest

from hat.eval.harness import HATLM


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HATLM(pretrained=str(tmp_path / "nowhere"))
