"""Word splitting throughput: `hat.splitter` (pure Python) vs the Rust `hat-splitter` 0.1.10 it reproduces.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_splitter.py --mb 4 --repeats 7

Text: `tests.helpers.text.mixed_text` (the generator the parity tests use), `--mb` MB of the full mix, plus 1 MB of
each kind alone. Rows:
- `split_words(text, 100)` vs `HATSplitter().split_with_limit(text, 100)`: text -> list of word bytes.
- batch collation, `encode_batch(docs)` vs the same from hat-splitter (split each document, then the
  concatenated byte ids, word lengths and words per document as int64 arrays); documents of ~2 KB.
- `word_lengths_batch(rows)` (the model's path from `input_ids`) vs hat-splitter on the decoded rows.
Every figure is the best of `--repeats` runs, ours and hat-splitter's interleaved, in CPU time of this
process (`time.process_time`: both are single-threaded, and the machine may be shared); the same words are
checked to come out of both. Writes the `splitter` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine, write_section  # noqa: E402
from hat.splitter import encode_batch, split_words, word_lengths_batch  # noqa: E402
from tests.helpers.text import KINDS, mixed_text  # noqa: E402


def best_of(repeats: int, ours, theirs) -> tuple[float, float]:
    """Best CPU seconds of `ours()` and `theirs()`, run alternately."""
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return min(t_ours), min(t_theirs)


def hat_encode_batch(splitter, docs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The natural collation on hat-splitter: split, then concatenate bytes and lengths."""
    words = [splitter.split_with_limit(d, 100) for d in docs]
    flat = [w for ws in words for w in ws]
    byte_ids = np.frombuffer(b"".join(flat), dtype=np.uint8).astype(np.int64)
    lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
    counts = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    return byte_ids, lengths, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="MB of mixed text")
    parser.add_argument("--kind-mb", type=float, default=1.0, help="MB of each kind alone")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    import hat_splitter
    import regex

    reference = hat_splitter.HATSplitter()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"

    # load data
    texts = {"mixed (all kinds)": mixed_text(int(args.mb * 1e6), args.seed)}
    realistic = tuple(k for k in KINDS if k != "random_unicode")
    texts["mixed without random Unicode"] = mixed_text(int(args.mb * 1e6), args.seed, realistic)
    for kind in KINDS:
        texts[kind] = mixed_text(int(args.kind_mb * 1e6), args.seed, (kind,))

    # split_words
    rows = []
    for name, text in texts.items():
        n_bytes = len(text.encode())
        ours = split_words(text)
        if ours != reference.split_with_limit(text, 100):
            raise SystemExit(f"{name}: words differ from hat-splitter")
        t_ours, t_ref = best_of(args.repeats, lambda: split_words(text), lambda: reference.split_with_limit(text, 100))
        rows.append((f"split_words, {name}", n_bytes, len(ours), n_bytes / t_ours / 1e6, n_bytes / t_ref / 1e6, t_ref / t_ours))
        print(f"{rows[-1][0]:55s} {rows[-1][3]:6.2f} MB/s vs {rows[-1][4]:6.2f} MB/s  {rows[-1][5]:.2f}x", flush=True)

    # batch collation: documents of ~2 KB from the mixed text
    for name in ("mixed (all kinds)", "mixed without random Unicode"):
        text = texts[name]
        docs = [text[i : i + 2000] for i in range(0, len(text), 2000)]
        n_bytes = sum(len(d.encode()) for d in docs)
        ours, ref = encode_batch(docs), hat_encode_batch(reference, docs)
        if not all(np.array_equal(a, b) for a, b in zip(ours, ref)):
            raise SystemExit("encode_batch differs from hat-splitter")
        t_ours, t_ref = best_of(args.repeats, lambda: encode_batch(docs), lambda: hat_encode_batch(reference, docs))
        rows.append((f"encode_batch, {len(docs)} docs, {name}", n_bytes, len(ours[1]), n_bytes / t_ours / 1e6, n_bytes / t_ref / 1e6, t_ref / t_ours))
        print(f"{rows[-1][0]:55s} {rows[-1][3]:6.2f} MB/s vs {rows[-1][4]:6.2f} MB/s  {rows[-1][5]:.2f}x", flush=True)

        byte_rows = [d.encode() for d in docs]

        def ref_lengths():
            return [[len(w) for w in reference.split_with_limit(r.decode(), 100)] for r in byte_rows]

        if word_lengths_batch(byte_rows) != ref_lengths():
            raise SystemExit("word_lengths_batch differs from hat-splitter")
        t_ours, t_ref = best_of(args.repeats, lambda: word_lengths_batch(byte_rows), ref_lengths)
        rows.append((f"word_lengths_batch, {len(docs)} rows, {name}", n_bytes, len(ours[1]), n_bytes / t_ours / 1e6, n_bytes / t_ref / 1e6, t_ref / t_ours))
        print(f"{rows[-1][0]:55s} {rows[-1][3]:6.2f} MB/s vs {rows[-1][4]:6.2f} MB/s  {rows[-1][5]:.2f}x", flush=True)

    # report
    table = ["| run | MB | words | ours MB/s | hat-splitter MB/s | ours / hat-splitter |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, n_bytes, n_words, ours, ref, ratio in rows:
        table.append(f"| {name} | {n_bytes / 1e6:.2f} | {n_words:,} | {ours:.2f} | {ref:.2f} | {ratio:.2f}x |")
    body = "\n".join(
        [
            "## Word splitting: `hat.splitter` vs `hat-splitter` (Rust)",
            "",
            f"`PYTHONPATH=. .venv/bin/python benchmarks/bench_splitter.py --mb {args.mb:g} --repeats {args.repeats}`",
            "",
            f"Machine: {machine()}; regex {regex.__version__}, "
            f"hat-splitter {importlib.metadata.version('hat-splitter')}; load average {load} when the runs started.",
            "Text: `tests.helpers.text.mixed_text(seed=0)`; best CPU time (`time.process_time`) of "
            f"{args.repeats} interleaved runs each; both sides produce the same words (checked). `random_unicode` is "
            "code points drawn from ~100 blocks, 40% of them chars around which UAX #29 is subtle (marks after "
            "punctuation, ZWJ, U+2044/U+202F): most of it goes through the char-by-char exact engine.",
            "",
            *table,
        ]
    )
    print()
    print(body)
    if not args.no_write:
        write_section("splitter", body)


if __name__ == "__main__":
    main()
