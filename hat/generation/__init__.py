"""Batched, cached byte-level generation (ARCHITECTURE.md §5):

    generate.py   `generate`, what `HATForCausalLM.generate` runs: the loop over bytes, the outputs
    arguments.py  HF's arguments checked and resolved: lengths, options implemented or refused
    beam.py       beam search over bytes, with the caches
    sampling.py   choosing the next byte, stop strings, which processors allow rows to be sampled in groups
    decoding.py   the decoding steps (prefill, encoder, backbone, decoder) over an explicit `DecodeState`
    caches.py     the byte rings, the word-level cache, the slot bookkeeping, RoPE tables
    fused.py      the byte stacks' Llama layers in few tensor ops, for the per-byte steps
    hidden_states.py  the decoder's states per layer (`output_hidden_states`)
    cli.py        `hat-generate`
"""

from .generate import generate

__all__ = ["generate"]
