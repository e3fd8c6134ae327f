"""The table of the model's parts (ARCHITECTURE.md §3.7): each top-level module, its name in memory and on disk,
and whether a conversion creates it or takes it from the source Llama.

Everything that depends on those names is derived here, once:
- `disk_name` / `memory_name` and `weight_renaming()`: the on-disk keys are the release's (`encoder.*`,
  `backbone.layers.N.*`, `lm_head.weight`); in memory the byte-level stack is `model.*` (`HATModel`);
- `NEW_PARTS` / `new_modules(model)`: what a conversion initialises (everything but the backbone);
- `is_backbone(name)`: the recipes' test for the Llama blocks (frozen, then trained at a lower learning rate);
- `BACKBONE_LORA_TARGETS` / `LORA_MODULES_TO_SAVE`: LoRA adapters on the backbone, the new parts trained in full;
- `INERT_MODULES` / `freeze_inert`: the decoder weights that cannot change the output (§3.5), frozen by construction;
- `check_finite(model)`: the first weight holding a NaN or an infinity, by its on-disk name (the eval CLIs; the
  conversion counts with `nonfinite_count` too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm


@dataclass(frozen=True)
class Part:
    """One top-level module of `HATForCausalLM`.

    Args:
        disk (`str`): its name in a checkpoint (the release's).
        memory (`str`): its attribute path in `HATForCausalLM`.
        from_llama (`bool`): the conversion copies it from the source Llama (else the conversion creates it).
    """

    disk: str
    memory: str
    from_llama: bool = False


PARTS = (
    Part("encoder", "model.encoder"),
    Part("encoder_connector", "model.encoder_connector"),
    Part("backbone", "model.backbone", from_llama=True),
    Part("decoder_connector", "model.decoder_connector"),
    Part("decoder", "model.decoder"),
    Part("layer_norm", "model.layer_norm"),
    Part("lm_head", "lm_head"),
)
NEW_PARTS = tuple(part.disk for part in PARTS if not part.from_llama)
_BY_DISK = {part.disk: part for part in PARTS}
_BY_MEMORY = {part.memory: part for part in PARTS}
# The parts whose two names differ, longest first: in a regex alternation `decoder` would also match the start of
# `decoder_connector`.
_RENAMED = sorted((p for p in PARTS if p.disk != p.memory), key=lambda p: len(p.disk), reverse=True)
_DISK_KEY = re.compile(rf"^({'|'.join(p.disk for p in _RENAMED)})\.")
_MEMORY_KEY = re.compile(rf"^({'|'.join(re.escape(p.memory) for p in _RENAMED)})\.")


def disk_name(name: str) -> str:
    """In-memory parameter name (`model.encoder.x`) -> on-disk name (`encoder.x`); other names unchanged."""
    return _MEMORY_KEY.sub(lambda m: _BY_MEMORY[m[1]].disk + ".", name)


def memory_name(name: str) -> str:
    """On-disk parameter name (`encoder.x`) -> in-memory name (`model.encoder.x`); other names unchanged."""
    return _DISK_KEY.sub(lambda m: _BY_DISK[m[1]].memory + ".", name)


def weight_renaming() -> list:
    """The `WeightRenaming`s that transformers applies on load (disk -> memory) and reverses on save."""
    from transformers.core_model_loading import WeightRenaming

    prefix = {p.memory.rsplit(".", 1)[0] for p in _RENAMED}
    if len(prefix) != 1:
        raise AssertionError(f"the renamed parts must share one in-memory prefix, got {sorted(prefix)}")
    return [WeightRenaming(rf"^({'|'.join(p.disk for p in _RENAMED)})\.", rf"{prefix.pop()}.\1.")]


def _module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def new_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules a conversion creates, by on-disk name, in `PARTS` order."""
    return {part.disk: _module(model, part.memory) for part in PARTS if not part.from_llama}


def is_backbone(name: str) -> bool:
    """Whether an in-memory parameter or module name (`model.backbone.layers.3.mlp...`) is in the Llama blocks."""
    backbone = _BY_DISK["backbone"].memory
    return name == backbone or name.startswith(backbone + ".")


# LoRA goes on the Llama blocks' projections. PEFT matches a string `target_modules` as a regex against the whole
# module name.
BACKBONE_LORA_TARGETS = (
    re.escape(_BY_DISK["backbone"].memory) + r"\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)

# Modules of a decoder block that cannot influence the output: each decoder cross-attention has exactly one key, so
# its softmax is 1 and the query side drops out (§3.5). They are kept for checkpoint compatibility and frozen for good
# by `freeze_inert`, so that no optimizer, DDP or ZeRO waits for their (absent) gradients.
INERT_MODULES = ("query_norm", "cross_attention.q_proj", "cross_attention.k_proj", "cross_attention.norm_query",
                 "cross_attention.norm_key")
INERT_PARAMETERS = tuple(f"{module}.weight" for module in INERT_MODULES)


def is_inert(name: str) -> bool:
    """Whether an in-memory parameter name is one of the decoder's output-inert weights."""
    return ".decoder_layers." in name and name.endswith(INERT_PARAMETERS)


class _Frozen:
    """A module whose parameters never train: each is frozen as it is registered, so also when loading a checkpoint
    (transformers assigns new `Parameter`s) or `load_state_dict(assign=True)` replaces it."""

    def register_parameter(self, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param.requires_grad_(False)
        super().register_parameter(name, param)


class FrozenLinear(_Frozen, nn.Linear):
    pass


class FrozenRMSNorm(_Frozen, LlamaRMSNorm):
    pass


_FROZEN = {nn.Linear: FrozenLinear, LlamaRMSNorm: FrozenRMSNorm}


def freeze_inert(block: nn.Module) -> None:
    """Freeze the output-inert modules (`INERT_MODULES`) of a decoder block, for good: each becomes its frozen twin
    (`FrozenLinear`, `FrozenRMSNorm`: the same module, whose parameters are frozen whenever they are set). The
    parameters and their names stay, so checkpoints keep the release's keys."""
    for path in INERT_MODULES:
        try:
            module = block.get_submodule(path)
        except AttributeError:  # no cross-attention in this block, or no query/key norms
            continue
        module.__class__ = _FROZEN.get(type(module), type(module))
        if not isinstance(module, _Frozen):
            raise TypeError(f"freeze_inert has no frozen twin for {path} ({type(module).__name__})")
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)


# The new parts train in full under LoRA. As `modules_to_save`, PEFT trains a copy of each, saves it with the
# adapter, keeps the original for the adapter-disabled model (DPO's reference), and puts the copy in place on
# `merge_and_unload`. PEFT matches these names as suffixes of module names. The decoder is listed by its trainable
# pieces, leaving out the output-inert weights: they stay frozen originals, so that no rank waits for their
# gradients and ZeRO-3, which saves PEFT models without frozen parameters, saves every tensor of the copies.
_DECODER_TRAINABLE = ("kv_norm", "cross_attention.v_proj", "cross_attention.o_proj", "llama_layer")
LORA_MODULES_TO_SAVE = tuple(
    name for part in PARTS if not part.from_llama
    for name in (_DECODER_TRAINABLE if part.disk == "decoder" else (part.memory,))
)


# ----------------------------------------------------------------------------------------------------------
# Finite weights
# ----------------------------------------------------------------------------------------------------------
def nonfinite_count(tensor: torch.Tensor, chunk: int = 2**22) -> int:
    """How many values of `tensor` are NaN or infinite, counted `chunk` values at a time (no mask of the tensor's
    size is allocated, and a finite chunk costs one reduction)."""
    flat = tensor.detach().reshape(-1)
    return sum(int((~torch.isfinite(part)).sum()) for part in flat.split(chunk) if not torch.isfinite(part).all())


def check_finite(model: nn.Module) -> None:
    """Raise if a weight (parameter) of `model` holds a NaN or an infinity; the first one is named (on-disk name).

    Raises:
        ValueError: naming the tensor, how many of its values are not finite, and its dtype.
    """
    for name, tensor in model.named_parameters():
        if tensor.is_meta or not tensor.is_floating_point():
            continue
        if bad := nonfinite_count(tensor):
            raise ValueError(
                f"weight {disk_name(name)!r} has {bad:,} NaN or infinite values of {tensor.numel():,} "
                f"({str(tensor.dtype).removeprefix('torch.')}): the checkpoint is damaged, or training diverged"
            )
