"""Batched, cached byte-level generation (ARCHITECTURE.md §5):

    generate.py   `generate`, what `HATForCausalLM.generate` runs: HF's arguments, the loop over bytes
    sampling.py   choosing the next byte, stop strings, which processors allow rows to be sampled in groups
    decoding.py   the decoding steps (prefill, encoder, backbone, decoder) over an explicit `DecodeState`
    caches.py     the byte rings, the word-level cache, the slot bookkeeping, RoPE tables
    fused.py      the byte stacks' Llama layers in few tensor ops, for the per-byte steps
    cli.py        `hat-generate`
"""

from .generate import generate

__all__ = ["generate"]
