"""hat.generation.hidden_states: `output_hidden_states` of `generate`, the decoder's states per layer of each new
byte, equal with and without the cache, in lockstep and in word sync."""

import pytest
import torch

from .helpers import PROMPTS, encode


@pytest.mark.parametrize("word_sync", [False, True])
def test_generate_returns_the_decoders_states_per_step(model, word_sync):
    ids, mask = encode(PROMPTS)
    T0, steps, layers = ids.shape[1], 20, model.config.decoder_config.num_hidden_layers
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None,
                  return_dict_in_generate=True, output_hidden_states=True, output_logits=True)
    cached = model.generate(**kwargs, word_sync=word_sync)
    full = model.generate(**kwargs, use_cache=False)
    assert torch.equal(cached.sequences, full.sequences)
    assert len(cached.hidden_states) == steps
    E = model.config.decoder_config.hidden_size
    assert [h.shape for h in cached.hidden_states[0]] == [(len(PROMPTS), T0, E)] * (layers + 1)  # the prompt
    assert [h.shape for h in cached.hidden_states[1]] == [(len(PROMPTS), 1, E)] * (layers + 1)  # then each byte
    for step, (got, want) in enumerate(zip(cached.hidden_states, full.hidden_states)):
        for layer, (a, b) in enumerate(zip(got, want)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=4e-4, msg=f"step {step} layer {layer}")
        # the last entry is what the head reads: its logits are that step's logits
        torch.testing.assert_close(model.lm_head(got[-1][:, -1]), cached.logits[step], rtol=1e-5, atol=1e-5)
    prompt_states = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for a, b in zip(cached.hidden_states[0], prompt_states):
        torch.testing.assert_close(a, b)


def test_hidden_states_of_finished_rows_stay_zero(model):
    ids, mask = encode(PROMPTS[:2])
    free = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None)
    eos = int(free[0, ids.shape[1] + 2])  # row 0 ends at its third byte
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos, pad_token_id=192,
                         return_dict_in_generate=True, output_hidden_states=True)
    n0 = int((out.sequences[0, ids.shape[1]:] == eos).nonzero()[0]) + 1
    assert n0 <= 3 and len(out.hidden_states) > n0  # row 0 ended, row 1 ran on
    assert all(h[0].abs().sum() == 0 for step in out.hidden_states[n0:] for h in step)
    assert all(h[1].abs().sum() > 0 for step in out.hidden_states[n0:] for h in step)
