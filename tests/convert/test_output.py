"""The output directory: never a partial output where the user looks, a clear error when it cannot be written."""

from __future__ import annotations

import os
import shutil

from llama_fixtures import assert_nothing_left, llama_dir, run_failing, src, tiny_llama  # noqa: F401 (fixtures)

from hat.convert.cli import main


def test_output_not_empty(src, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("keep me")
    run_failing(["--input", str(src), "--output", str(out)], capsys, "exists and is not empty")
    assert os.listdir(out) == ["stale.txt"]
    assert_nothing_left(tmp_path, {"src", "out"})

    assert main(["--input", str(src), "--output", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()
    assert_nothing_left(tmp_path, {"src", "out"})


def test_not_enough_disk(src, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "not enough free disk space")
    assert_nothing_left(tmp_path, {"src"})
