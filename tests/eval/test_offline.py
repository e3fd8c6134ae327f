"""hat.eval.offline: export a task's data and an override that reads it; the override scores like the original."""

from __future__ import annotations

from pathlib import Path

import pytest

from hat.eval.harness import HATLM
from tests.helpers.scoring import local_task_manager


def test_offline_export_roundtrip(tiny_model, tmp_path):
    """`hat.eval.offline` writes data + overrides; the `_local` group scores exactly like the original."""
    import lm_eval
    import yaml

    from hat.eval.offline import export

    [path] = export(["hat_mc"], tmp_path / "offline", local_task_manager())
    spec = yaml.safe_load(path.read_text())
    assert spec["group"] == "hat_mc_local" and [e["task"] for e in spec["task"]] == ["hat_mc_en", "hat_mc_de"]
    assert all(e["dataset_path"] == "json" and Path(e["dataset_kwargs"]["data_files"]["test"]).is_file() for e in spec["task"])
    assert all(e["custom_dataset"] is None for e in spec["task"])  # so the override reads the exported files

    lm = HATLM(pretrained=tiny_model, batch_size=4, device="cpu")
    kw = dict(model=lm, limit=3, log_samples=True)
    original = lm_eval.simple_evaluate(tasks=["hat_mc_de"], task_manager=local_task_manager(), **kw)
    offline = lm_eval.simple_evaluate(tasks=["hat_mc_local"], task_manager=local_task_manager(tmp_path / "offline" / "tasks"), **kw)
    scores = lambda r: [resp[0][0] for s in r["samples"]["hat_mc_de"] for resp in s["resps"]]  # noqa: E731
    assert scores(offline) == pytest.approx(scores(original), abs=1e-4)  # batches differ: float noise only
