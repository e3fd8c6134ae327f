"""Scoring bytes straight from a model's logits: the references the eval tests compare `hat.eval` with."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byte_logprobs(model, data: bytes) -> torch.Tensor:
    """(T - 1,) log p(byte t + 1 | bytes <= t) of one row, straight from the logits."""
    ids = torch.tensor([list(data)])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0].float(), -1)  # (T, 256)
    return logp[:-1].gather(-1, ids[0, 1:, None])[:, 0]


def score_bytes(model, data: bytes, n: int) -> tuple[float, bool]:
    """Sum of the log-probs of the last `n` bytes of `data`, and whether each is the argmax, from one forward."""
    ids = torch.tensor([list(data)])
    with torch.no_grad():
        logp = F.log_softmax(model(ids).logits[0, :-1].float(), -1)[-n:]  # (n, 256): positions predicting them
    target = ids[0, -n:]
    return float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())


def local_task_manager(*extra):
    """lm-eval's task manager over `eval/tasks` (and `extra` directories) only: fast, no upstream index."""
    from lm_eval.tasks import TaskManager

    from hat.eval.harness import TASKS_DIR

    return TaskManager(include_path=[str(TASKS_DIR), *map(str, extra)], include_defaults=False)
