"""Seeded text perturbations for the robustness evals: character noise (swap / drop / insert) and ALL CAPS.

    python -m hat.eval.noise --kind swap --rate 0.1 --seed 0 "Straße über die Brücke"

Everything works on Python strings (code points), never on bytes, so the result is always valid UTF-8.
Noise touches letters only (`str.isalpha`), so whitespace, digits and punctuation (the layout of the text and the
numbers in it) stay; each letter is hit with probability `rate`:
- `swap`: exchange it with the next character when that is a letter too (a transposition typo);
- `drop`: delete it;
- `insert`: insert a letter before it, drawn from the letters of the text itself (so German noise stays German);
- `mixed`: one of the three, uniformly.
A combining mark (category M) is not a letter, so it stays where it is; dropping its base leaves the mark on the
previous character, which is odd text but valid UTF-8. `caps` is `str.upper()` ("ß" -> "SS", so the text grows).
The same `(text, kind, rate, seed)` always gives the same output.
"""

from __future__ import annotations

import argparse
import random

NOISE_KINDS = ("swap", "drop", "insert", "mixed")
PERTURBATIONS = ("caps", *NOISE_KINDS)


def all_caps(text: str) -> str:
    """ALL CAPS, by Unicode's full case mapping ("ß" -> "SS", "ŉ" -> "ʼN")."""
    return text.upper()


def char_noise(text: str, kind: str, rate: float, seed: int = 0) -> str:
    """Apply `kind` noise to each letter of `text` with probability `rate`, drawing from `random.Random(seed)`.

    Raises:
        ValueError: unknown `kind`, or `rate` outside [0, 1].
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    rng = random.Random(seed)
    alphabet = sorted({c for c in text if c.isalpha()})  # sorted: set order must not leak into the output
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        if not c.isalpha() or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        op = rng.choice(("swap", "drop", "insert")) if kind == "mixed" else kind
        if op == "swap":
            if i + 1 < len(chars) and chars[i + 1].isalpha():
                out += [chars[i + 1], c]
                i += 2
                continue
            out.append(c)  # nothing to swap with: keep the letter
        elif op == "insert":
            out += [rng.choice(alphabet), c]
        # "drop": append nothing
        i += 1
    return "".join(out)


def perturb(text: str, kind: str, rate: float = 0.05, seed: int = 0) -> str:
    """`kind` is "clean", "caps" or a noise kind; see the module docstring."""
    if kind == "clean":
        return text
    if kind == "caps":
        return all_caps(text)
    return char_noise(text, kind, rate, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text")
    parser.add_argument("--kind", default="mixed", choices=("clean", *PERTURBATIONS))
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(perturb(args.text, args.kind, args.rate, args.seed))


if __name__ == "__main__":
    main()
