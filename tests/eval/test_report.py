"""hat.eval.report: inputs checked before any model loads; the report's figures are the ones computed directly."""

from __future__ import annotations

import json
import math

import pytest

from hat.eval.harness import TASKS_DIR
from hat.eval.intrinsic import byte_windows
from hat.eval.noise import perturb
from hat.eval.robustness import load_mc
from hat.splitter import split_words
from tests.helpers.scoring import byte_logprobs, local_task_manager, score_bytes


def test_bad_inputs_fail_before_any_model_loads(tmp_path):
    from hat.eval.report import check_tasks, main as report_main

    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown lm-eval task.*hat_mc_xx.*did you mean"):
        check_tasks(["hat_mc_en", "hat_mc_xx"], local_task_manager())
    # tmp_path is no checkpoint: these fail on the inputs, before any model is loaded
    with pytest.raises(ValueError, match="empty"):
        report_main(["--hat", str(tmp_path), "--llama", str(tmp_path), "--texts", str(empty)])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        report_main(["--hat", str(tmp_path), "--llama", str(tmp_path), "--texts", str(tmp_path / "missing.txt")])
    good = tmp_path / "good.txt"
    good.write_text("Genug Text.", encoding="utf-8")
    (tmp_path / "mc.jsonl").write_text('{"question": "Q?", "choices": ["a"], "answer": 0}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"mc.jsonl:2: not valid JSON"):
        report_main(["--hat", str(tmp_path), "--llama", str(tmp_path), "--texts", str(good), "--mc", str(tmp_path / "mc.jsonl")])


def hat_bpb(model, text: str, window: int) -> float:
    """Bits per byte from the logits: disjoint windows, the first byte of each one context only."""
    data = text.encode()
    windows = byte_windows(data, window)
    nll = sum(-float(byte_logprobs(model, w).sum()) for w in windows)
    return nll / math.log(2) / (len(data) - len(windows))


def test_report_end_to_end(tiny_model, tiny_llama, llama3_tokenizer, tmp_path):
    from hat.tokenizer import build_tokenizer

    from hat.eval.report import main as report_main

    tiny_model.save_pretrained(tmp_path / "hat")
    build_tokenizer().save_pretrained(tmp_path / "hat")
    tiny_llama.save_pretrained(tmp_path / "llama")
    llama3_tokenizer.save_pretrained(tmp_path / "llama")
    texts = {"en": "The quick brown fox jumps over the lazy dog. " * 2, "de": "Der Igel läuft über die Straße. " * 2}
    for lang, text in texts.items():
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "heldout.txt").write_text(text, encoding="utf-8")
    mc = tmp_path / "mc.jsonl"
    mc.write_text("\n".join(open(TASKS_DIR / "hat_mc" / "hat_mc_en.jsonl", encoding="utf-8").read().splitlines()[:2]) + "\n")
    out = tmp_path / "report"
    report_main([
        "--hat", str(tmp_path / "hat"), "--llama", str(tmp_path / "llama"), "--texts", str(tmp_path / "en" / "heldout.txt"),
        str(tmp_path / "de" / "heldout.txt"), "--out", str(out), "--mc", str(mc), "--perturbations", "caps", "swap",
        "--hat_window", "48", "--llama_window", "16", "--device", "cpu",
    ])
    report = json.loads((out / "report.json").read_text())
    assert set(report["texts"]) == {"en/heldout", "de/heldout"}
    en = report["texts"]["en/heldout"]
    assert en["compression"]["llama_tokens"] == en["compression"]["llama3_tokens"]
    assert set(en["robustness"]) == {"caps", "swap"} and set(report["mc"]["mc"]) == {"items", "clean", "caps", "swap"}
    assert all(math.isfinite(v) for v in en["bits_per_byte"].values())

    # The figures, computed directly: HAT bits per byte (clean and ALL CAPS), compression, multiple-choice accuracy
    text = texts["de"]
    de = report["texts"]["de/heldout"]
    clean = hat_bpb(tiny_model, text, 48)
    assert de["bits_per_byte"]["hat"] == pytest.approx(clean, rel=1e-5)
    caps = hat_bpb(tiny_model, perturb(text, "caps"), 48)
    assert de["robustness"]["caps"]["hat"]["bits_per_byte"] == pytest.approx(caps, rel=1e-5)
    assert de["robustness"]["caps"]["hat"]["rel_change"] == pytest.approx((caps - clean) / clean, rel=1e-4)
    words = len(split_words(text, max_word_size=tiny_model.config.max_word_size))
    assert de["compression"]["hat_words"] == {"positions": words, "bytes_per_position": len(text.encode()) / words}
    correct = 0
    for item in load_mc(mc):
        context = f"Q: {item['question']}\nA:"
        scores = [score_bytes(tiny_model, f"{context} {c}".encode(), len(f" {c}".encode()))[0] for c in item["choices"]]
        correct += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
    assert report["mc"]["mc"]["clean"]["hat"]["acc"] == pytest.approx(correct / 2)

    md = (out / "report.md").read_text()
    assert "| en/heldout |" in md and "## Compression" in md and "## Robustness" in md
    assert f"{clean:.3f}" in md  # the table shows the number
    for png in ("bits_per_byte.png", "compression.png", "robustness.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
