"""What a conversion tells the user: the summary printed by `convert-llama` and the model card (`README.md`).

    ConversionSummary     # what was kept, dropped and created; files, bytes, time, peak memory
    model_card(summary, seed)
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hat.config import HATConfig
from hat.model.parts import PARTS

from .table import BACKBONE


@dataclass
class ConversionSummary:
    """What a conversion wrote and what it cost."""

    source: str
    output: Path
    dtype: str
    kept_tensors: int
    kept_params: int
    dropped: dict[str, int]  # source key -> parameters
    new_params: dict[str, int]  # on-disk module prefix -> parameters
    shards: int
    total_bytes: int
    seconds: float
    peak_rss_bytes: int
    config: HATConfig = field(repr=False)
    teacher_params: int = 0  # kept in teacher/ (0: no teacher files)

    def __str__(self) -> str:
        new = sum(self.new_params.values())
        total = self.kept_params + new
        lines = [
            f"converted {self.source} -> {self.output}",
            f"  kept    {self.kept_params:>15,} params in {self.kept_tensors} tensors (backbone, {self.dtype})",
            f"  dropped {sum(self.dropped.values()):>15,} params: "
            + ", ".join(f"{k} ({v:,})" for k, v in self.dropped.items()),
            f"  new     {new:>15,} params ({100 * new / total:.2f}% of {total:,}), untrained: "
            + ", ".join(f"{k} {v:,}" for k, v in self.new_params.items()),
            f"  wrote {self.total_bytes / 2**20:,.1f} MiB in {self.shards} shard(s)"
            + (f", and teacher/: the source's embedding, norm and head ({self.teacher_params:,} params) and tokenizer"
               if self.teacher_params else ", no teacher files"),
            f"  time {self.seconds:.1f} s, peak RSS {self.peak_rss_bytes / 2**20:,.0f} MiB",
        ]
        return "\n".join(lines)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    On Linux `VmHWM` of `/proc/self/status`: unlike `getrusage`'s `ru_maxrss`, it is not inherited from the parent
    process across fork/exec, so a subprocess's figure is its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def model_card(summary: ConversionSummary, seed: int) -> str:
    """The README.md of a converted checkpoint: source, module sizes, what is untrained, the next command."""
    c = summary.config
    enc, bb, dec = c.encoder_config, c.backbone_config, c.decoder_config
    new, total = sum(summary.new_params.values()), summary.kept_params + sum(summary.new_params.values())
    byte = (f"width {enc.hidden_size} = {enc.num_attention_heads} x {enc.head_dim} (heads x head size), "
            f"SwiGLU {enc.intermediate_size}")
    what = {
        "encoder": f"byte embedding 256 -> {enc.hidden_size}; {enc.num_hidden_layers} Llama layers ({byte}), "
                   f"sliding window {enc.sliding_window}",
        "encoder_connector": f"latent query + cross-attention, {enc.cross_attention_config.num_attention_heads} "
                             f"heads, bytes -> width {bb.hidden_size}",
        "backbone": f"{bb.num_hidden_layers} Llama layers, width {bb.hidden_size}, {bb.num_attention_heads} heads "
                    f"({bb.num_key_value_heads} KV), SwiGLU {bb.intermediate_size}",
        "decoder_connector": "first-word embedding",
        "decoder": f"{dec.num_hidden_layers} layers: word cross-attention + Llama layer ({byte}), "
                   f"sliding window {dec.sliding_window}",
        "layer_norm": f"RMSNorm {dec.hidden_size}",
        "lm_head": f"{dec.hidden_size} -> 256 bytes",
    }
    if set(what) != {part.disk for part in PARTS}:
        raise AssertionError(f"the model card describes {sorted(what)}, the model has {[p.disk for p in PARTS]}")
    params = {BACKBONE.disk: summary.kept_params, **summary.new_params}
    table = "\n".join(
        f"| `{p.disk}` | {what[p.disk]} | {params[p.disk]:,} | {f'from {summary.source}' if p.from_llama else 'untrained'} |"
        for p in PARTS
    )
    dropped = ", ".join(f"`{k}` ({v:,})" for k, v in summary.dropped.items()) or "nothing"
    teacher = (
        f"They are kept in `teacher/` ({summary.teacher_params:,} parameters, with the source's tokenizer): with this "
        "checkpoint's backbone they are the source model, which teacher-guided stage-1 training learns from "
        "(`hat.teacher`)."
        if summary.teacher_params else "No teacher files were written (`--no-teacher`)."
    )
    return f"""---
library_name: transformers
tags: [hat, byte-level, hierarchical-autoregressive-transformer, untrained]
---
# {summary.output.name}: HAT converted from {summary.source}

A byte-level hierarchical autoregressive transformer (HAT) whose backbone is the decoder blocks of
**{summary.source}**, converted with `convert-llama` (`hat.convert`). Weights are {summary.dtype}.

| module | what | parameters | state |
| --- | --- | ---: | --- |
{table}

{total:,} parameters; the new modules are {new:,} ({100 * new / total:.2f}%). Dropped from the source
(a byte model does not use them): {dropped}. {teacher}

**The encoder, connectors, decoder, final norm and byte head are untrained** (random, `init_new_modules(seed={seed})`):
this checkpoint produces noise until stage 1 of the conversion recipe has trained them.

## Next step

Stage 1 of the conversion recipe trains the new modules with the backbone frozen, then unfreezes it at a tenth
of the learning rate. With the CPU-sized SmolLM2 config (for Llama-3.1-8B use `recipes/llama-3.1-8b/pretrain.yaml`
and an accelerate config from `recipes/accelerate_configs/`; `recipes/` has one YAML per model and stage):

    accelerate launch --config_file recipes/accelerate_configs/single_device.yaml --mixed_precision no \\
        recipes/pretrain.py --config recipes/smollm2-135m/pretrain.yaml --model_name_or_path {summary.output}
"""
