"""The model's parts: their names in memory and on disk, and the output-inert weights (ARCHITECTURE.md §3.7)."""

from __future__ import annotations

from torch import nn

# Top-level modules of the release's checkpoint; in memory they live under `model.`.
RELEASE_TOP_MODULES = ("encoder", "encoder_connector", "backbone", "decoder_connector", "decoder", "layer_norm")


# Parameters that cannot influence the output (see HATDecoderBlock); kept frozen so DDP / ZeRO never wait on them.
INERT_PARAMETERS = ("query_norm.weight", "cross_attention.q_proj.weight", "cross_attention.k_proj.weight",
                    "cross_attention.norm_query.weight", "cross_attention.norm_key.weight")


def freeze_inert_parameters(model: nn.Module) -> None:
    """Freeze the decoder's query-side cross-attention weights, which get no gradient by construction."""
    for name, param in model.named_parameters():
        if ".decoder_layers." in name and name.endswith(INERT_PARAMETERS):
            param.requires_grad_(False)
