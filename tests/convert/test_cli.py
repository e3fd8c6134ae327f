"""`convert-llama`: its defaults, and how errors reach the user (one line, exit code 1)."""

from __future__ import annotations

from pathlib import Path

import hat.convert.checkpoint
from hat.convert.cli import DEFAULT_OUTPUT, main
from hat.convert.gguf_io import default_source


def test_default_input_and_output(monkeypatch):
    calls = []
    monkeypatch.setattr(hat.convert.checkpoint, "convert_gguf", lambda *a, **k: calls.append((a, k)) or "summary")
    assert main([]) == 0
    (source, output), kwargs = calls[0]
    assert source == default_source() and output == Path(DEFAULT_OUTPUT)
    assert kwargs["preset"] == "auto" and kwargs["dtype"] == "auto" and not kwargs["overwrite"]
