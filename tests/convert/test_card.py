"""The model card and the summary: one row per part of the model, what is untrained, the next command."""

from __future__ import annotations

import re

from llama_fixtures import converted, llama_dir, tiny_llama  # noqa: F401 (fixtures)

from hat.model.parts import PARTS


def test_model_card_has_one_row_per_part(converted, llama_dir):  # noqa: F811
    card = (converted / "README.md").read_text()
    rows = {m[1]: (int(m[2].replace(",", "")), m[3]) for m in re.finditer(r"^\| `(\w+)` \| .* \| ([\d,]+) \| (.+) \|$",
                                                                       card, flags=re.M)}
    assert list(rows) == [part.disk for part in PARTS]
    for part in PARTS:
        params, state = rows[part.disk]
        assert params > 0
        assert state == (f"from {llama_dir}" if part.from_llama else "untrained"), part
    total = sum(params for params, _ in rows.values())
    assert f"{total:,} parameters" in card
    assert f"--model_name_or_path {converted}" in card


def test_summary_names_what_was_dropped(capsys, tmp_path, llama_dir):  # noqa: F811
    from hat.convert.cli import main

    assert main(["--input", str(llama_dir), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"converted {llama_dir} -> {tmp_path / 'out'}" in out
    assert "model.embed_tokens.weight (32,768)" in out and "lm_head.weight (32,768)" in out
    assert "untrained: encoder" in out and "peak RSS" in out
