"""hat.eval.robustness: multiple-choice accuracy scored as lm-eval does, and the multiple-choice files."""

from __future__ import annotations

import pytest

from hat.eval.harness import TASKS_DIR, HATLM
from hat.eval.robustness import load_mc, mc_accuracy, relative_change
from tests.helpers.scoring import score_bytes


def test_mc_accuracy_scores_like_lm_eval(tiny_model):
    items = load_mc(TASKS_DIR / "hat_mc" / "hat_mc_de.jsonl")[:2]
    lm = HATLM(pretrained=tiny_model, batch_size=4, device="cpu")
    expected = 0
    for item in items:
        ctx = f"Q: {item['question']}\nA:"
        scores = [score_bytes(tiny_model, f"{ctx} {c}".encode(), len(f" {c}".encode()))[0] for c in item["choices"]]
        expected += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
    assert mc_accuracy(lm, items) == pytest.approx(expected / len(items))


def test_relative_change():
    assert relative_change(2.0, 2.5) == pytest.approx(0.25) and relative_change(0.5, 0.25) == pytest.approx(-0.5)
    assert relative_change(0.0, 1.0) != relative_change(0.0, 1.0)  # nan: no change relative to 0


GOOD = '{"question": "Q?", "choices": ["a", "b"], "answer": 1}'


@pytest.mark.parametrize(
    "content, message",
    [
        (GOOD + "\n{not json\n", r"mc.jsonl:2: not valid JSON \(Expecting property name enclosed in double quotes at column 2\)"),
        (GOOD + "\n\n[1, 2]\n", r"mc.jsonl:3: an item needs question, choices and answer; got \[1, 2\]"),
        ('{"question": "Q?", "choices": ["a"]}', r"mc.jsonl:1: an item needs question, choices and answer; got \['choices', 'question'\]"),
        ('{"question": "Q?", "choices": ["a", "b"], "answer": "0"}', r"mc.jsonl:1: answer must be the index of the right choice \(an int\), got '0'"),
        ('{"question": "Q?", "choices": ["a", "b"], "answer": true}', r"mc.jsonl:1: answer must be the index .* got True"),
        ('{"question": "Q?", "choices": [], "answer": 0}', r"mc.jsonl:1: answer 0 is not an index into 0 choices"),
        ('{"question": "Q?", "choices": "ab", "answer": 0}', r"mc.jsonl:1: choices must be a list of strings, got 'ab'"),
        ('{"question": 3, "choices": ["a"], "answer": 0}', r"mc.jsonl:1: question must be a string, got 3"),
        ("", r"mc.jsonl is empty: no multiple-choice items"),
    ],
    ids=["not-json", "not-an-object", "no-answer", "answer-str", "answer-bool", "answer-range", "choices-str",
         "question-int", "empty"],
)  # fmt: skip
def test_load_mc_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "mc.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_mc(path)


def test_load_mc_refuses_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_mc(tmp_path / "missing.jsonl")
    (tmp_path / "mc.jsonl").write_bytes(GOOD.encode() + b"\n\x9b\x00")
    with pytest.raises(ValueError, match=r"mc.jsonl:2: not UTF-8 text \(byte 0x9b at offset 55\); is it a binary file\?"):
        load_mc(tmp_path / "mc.jsonl")
    assert load_mc(TASKS_DIR / "hat_mc" / "hat_mc_en.jsonl")[0].keys() >= {"question", "choices", "answer"}
