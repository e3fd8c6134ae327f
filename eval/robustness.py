"""Robustness to spelling noise and ALL CAPS: relative change in bits per byte and in multiple-choice accuracy.

    python -m hat.eval.report --hat DIR --llama DIR --texts en.txt de.txt --out outputs/report   # computes these

relative change = (perturbed - clean) / clean: for bits per byte, +0.30 means 30% more bits per byte; for accuracy,
-0.30 means 30% of the accuracy lost. The perturbations are `hat.eval.noise.perturb` (seeded).

The multiple-choice sets are JSON lines `{"question", "choices", "answer"}` (`eval/tasks/hat_mc/*.jsonl`, the same
files as the lm-eval tasks `hat_mc_en` / `hat_mc_de`). Each item is scored as lm-eval scores a multiple-choice
task: the log-likelihood of `" " + choice` after `"Q: {question}\nA:"`, through the model's lm-eval `LM`
(`HATLM` for HAT, lm-eval's `HFLM` for the Llama); the highest wins. Question and choices are perturbed (item i
with seed `seed + i`), the "Q:"/"A:" frame is not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .noise import perturb

DEFAULT_KINDS = ("caps", "swap", "drop", "insert", "mixed")


def relative_change(clean: float, perturbed: float) -> float:
    return (perturbed - clean) / clean if clean else float("nan")


def load_mc(path: str | os.PathLike) -> list[dict]:
    """Items `{"question": str, "choices": [str, ...], "answer": int}` from a JSON-lines file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not UTF-8, has no items, or a line is not JSON or not such an item (`file:line`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multiple-choice file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start]
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {byte:#04x} at offset {error.start}); is it a binary file?"
        ) from None
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{n}: not valid JSON ({error.msg} at column {error.colno})") from None
        if (problem := _mc_problem(item)) is not None:
            raise ValueError(f"{path}:{n}: {problem}")
        items.append(item)
    if not items:
        raise ValueError(f"{path} is empty: no multiple-choice items")
    return items


def _mc_problem(item) -> str | None:
    if not isinstance(item, dict) or not {"question", "choices", "answer"} <= set(item):
        return f"an item needs question, choices and answer; got {sorted(item) if isinstance(item, dict) else item!r}"
    if not isinstance(item["question"], str):
        return f"question must be a string, got {item['question']!r}"
    choices = item["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        return f"choices must be a list of strings, got {choices!r}"
    answer = item["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        return f"answer must be the index of the right choice (an int), got {answer!r}"
    if not 0 <= answer < len(choices):
        return f"answer {answer} is not an index into {len(choices)} choices"
    return None


def mc_accuracy(lm, items: Sequence[dict], kind: str = "clean", rate: float = 0.05, seed: int = 0) -> float:
    """Accuracy of an lm-eval `LM` on `items` after perturbing them with `kind` (see the module docstring)."""
    from lm_eval.api.instance import Instance

    requests, spans = [], []
    for i, item in enumerate(items):
        question = perturb(item["question"], kind, rate, seed + i)
        context = f"Q: {question}\nA:"
        start = len(requests)
        for j, choice in enumerate(item["choices"]):
            # a different stream per choice, so that equal choices of different items are not perturbed alike
            cont = " " + perturb(choice, kind, rate, (seed + i) * 1009 + j + 1)
            requests.append(Instance(request_type="loglikelihood", doc=item, arguments=(context, cont), idx=j))
        spans.append((start, len(requests)))
    scores = [logprob for logprob, _ in lm.loglikelihood(requests)]
    correct = 0
    for item, (s, e) in zip(items, spans):
        choice_scores = scores[s:e]
        correct += int(max(range(len(choice_scores)), key=choice_scores.__getitem__) == item["answer"])
    return correct / len(items)


def bpb_robustness(
    bits_per_byte: Callable[[str], float], text: str, kinds: Sequence[str] = DEFAULT_KINDS, rate: float = 0.05, seed: int = 0
) -> dict[str, dict[str, float]]:
    """`{kind: {"bits_per_byte", "rel_change"}}` for "clean" and each perturbation of `text`."""
    clean = bits_per_byte(text)
    out = {"clean": {"bits_per_byte": clean, "rel_change": 0.0}}
    for kind in kinds:
        value = bits_per_byte(perturb(text, kind, rate, seed))
        out[kind] = {"bits_per_byte": value, "rel_change": relative_change(clean, value)}
    return out


def mc_robustness(
    lm, items: Sequence[dict], kinds: Sequence[str] = DEFAULT_KINDS, rate: float = 0.05, seed: int = 0
) -> dict[str, dict[str, float]]:
    """`{kind: {"acc", "rel_change"}}` for "clean" and each perturbation of the items."""
    clean = mc_accuracy(lm, items, "clean", rate, seed)
    out = {"clean": {"acc": clean, "rel_change": 0.0}}
    for kind in kinds:
        acc = mc_accuracy(lm, items, kind, rate, seed)
        out[kind] = {"acc": acc, "rel_change": relative_change(clean, acc)}
    return out
