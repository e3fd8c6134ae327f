"""Helpers of the generation tests: tiny random models, left-padded prompts, the full-recompute reference, and a
logits processor that forces bytes.

The reference is defined as: at each step, segment the whole current sequence with the splitter's byte rule, run
the full forward and take the last position's logits (`reference_greedy`, written without hat.generation).
"""

import torch
from transformers import LogitsProcessor

from hat import HATConfig, HATForCausalLM

EOS = 192
PROMPTS = [
    "Hello, world! The quick",  # ends mid-word: the last prompt word is continued
    "Straße\nÜber die Brücke\nÄ",  # German, words starting with Ü/Ä after a newline
    "emoji 😀👍 and 漢字",
    "x",
]


def make_model(scale: float, seed: int = 0, **config) -> HATForCausalLM:
    """HATConfig.tiny() (sliding window 16) with weights scaled up so that greedy outputs vary with the input."""
    torch.manual_seed(seed)
    model = HATForCausalLM(HATConfig.tiny(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def left_pad(rows: list[bytes], pad: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[b, T - len(r) :] = 1
    return ids, mask


def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return left_pad([t.encode("utf-8") for t in texts])


@torch.no_grad()
def reference_greedy(model, ids, mask, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding by full recompute: the whole sequence through `model(...)` at every step."""
    logits_per_step = []
    for _ in range(steps):
        logits = model(ids, attention_mask=mask).logits[:, -1]  # the splitter segments the whole sequence
        logits_per_step.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids, logits_per_step


class ForceBytes(LogitsProcessor):
    """Makes the row with prompt `prompts[i]` generate `scripts[i]` byte by byte (its logits are still computed).

    Rows are recognised by their prompt, not their index, so it also works on the row groups that `word_sync` passes.
    """

    def __init__(self, scripts: list[bytes], prompts: torch.Tensor):
        self.prompt_len = prompts.shape[1]
        self.scripts = {tuple(p.tolist()): s for p, s in zip(prompts, scripts)}

    def __call__(self, input_ids, scores):
        i = input_ids.shape[1] - self.prompt_len
        forced = torch.full_like(scores, float("-inf"))
        for b, row in enumerate(input_ids):
            script = self.scripts[tuple(row[: self.prompt_len].tolist())]
            forced[b, script[min(i, len(script) - 1)]] = 0
        return forced


def generated(out: torch.Tensor, prompt_len: int) -> list[bytes]:
    return [bytes(row[prompt_len:].tolist()) for row in out]
