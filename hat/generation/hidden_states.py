"""`output_hidden_states`: the decoder's byte states, per layer (ARCHITECTURE.md §3.9), for `HATForCausalLM.forward`
and for `generate`.

`hidden_states` is a tuple of `decoder_config.num_hidden_layers + 1` tensors `(B, T, E)`: the decoder's input (the
encoder's byte states), then the output of each decoder layer, the last one after the final norm, so that
`lm_head(hidden_states[-1])` are the logits (as in transformers' Llama). The layers' outputs are recorded with forward
hooks, as transformers' own `capture_outputs` does, so the model's code paths stay as they are.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def recording_decoder_layers(hat_model) -> Iterator[list[torch.Tensor]]:
    """Within the block, every call of a decoder Llama layer of `hat_model` (`HATModel`) appends its output to the
    yielded list (in call order)."""
    recorded: list[torch.Tensor] = []

    def hook(module, args, output):
        recorded.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in hat_model.byte_layers()[1]]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def decoder_hidden_states(decoder_input: torch.Tensor, recorded: list[torch.Tensor],
                          last_hidden_state: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The decoder's input (B, T, E), the recorded layer outputs and the normalised last state -> `hidden_states`."""
    return (decoder_input, *recorded[:-1], last_hidden_state)
