"""hat.generation.arguments: every option of HF's `generate` implemented or refused by name, lengths resolved as
transformers resolves them, prompts longer than the model was made for."""

import pytest
import torch
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from .helpers import encode


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_new_tokens=1.5), r"max_new_tokens must be an int \(a number of bytes\), got 1.5"),
    (dict(max_new_tokens=True), "max_new_tokens must be an int"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1, got 0"),
    (dict(max_new_tokens=-1), "max_new_tokens must be >= 1, got -1"),
    (dict(max_length=2.0), "max_length must be an int"),
    (dict(max_new_tokens=2, eos_token_id=[]), r"eos_token_id=\[\] names no byte"),
    (dict(max_new_tokens=2, eos_token_id=300), r"eos_token_id must be byte values 0-255, got \[300\]"),
    (dict(max_new_tokens=2, pad_token_id=-1), "pad_token_id must be byte values 0-255"),
    (dict(max_new_tokens=2, past_key_values=object()), "does not take `past_key_values`"),
    (dict(max_new_tokens=2, return_legacy_cache=True), "does not take `return_legacy_cache`"),
    (dict(max_new_tokens=2, output_attentions=True), "attention weights.*output_attentions=True"),
    (dict(max_new_tokens=2, cache_implementation="static"), "cache_implementation='static'"),
    (dict(max_new_tokens=2, num_beams=2, num_beam_groups=2, diversity_penalty=1.0), "diverse"),
    (dict(max_new_tokens=2, num_beams=2, force_words_ids=[[65]]), "constrained beam search"),
    (dict(max_new_tokens=2, penalty_alpha=0.6, top_k=4), "contrastive search"),
    (dict(max_new_tokens=2, dola_layers="high"), "DoLa"),
    (dict(max_new_tokens=2, max_time=-1), "max_time must be a number of seconds"),
])
def test_options_are_checked_or_refused_by_name(model, kwargs, message):
    ids, mask = encode(["abc", "a"])
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids=ids, attention_mask=mask, **kwargs)


# --------------------------------------------------------------------------------- lengths as in transformers
def test_no_length_argument_generates_20_bytes_after_any_prompt(model):
    """transformers' default: `max_length` 20 means 20 new tokens (bytes) after the prompt, with its warning."""
    ids, _ = encode(["a prompt of well over twenty bytes"])
    with pytest.warns(UserWarning, match="default `max_length`"):
        out = model.generate(input_ids=ids, eos_token_id=None)
    assert out.shape == (1, ids.shape[1] + 20)


def test_max_new_tokens_takes_precedence_over_max_length(model):
    ids, _ = encode(["Hello"])
    with CaptureLogger(logging.get_logger("transformers.generation.utils")) as cl:
        out = model.generate(input_ids=ids, max_new_tokens=7, max_length=6, eos_token_id=None)
    assert out.shape == (1, ids.shape[1] + 7)
    assert "`max_new_tokens` will take precedence" in cl.out
    out = model.generate(input_ids=ids, max_length=8, eos_token_id=None)  # max_length alone counts the prompt
    assert out.shape == (1, 8)
    with pytest.raises(ValueError, match="Input length of input_ids is 5, but `max_length` is set to 3"):
        model.generate(input_ids=ids, max_length=3)


def test_max_time_stops_every_row(model):
    ids, mask = encode(["ab", "cde"])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10**6, eos_token_id=None, max_time=0.0)
    assert out.shape == (2, ids.shape[1] + 1)  # the first byte, then the time is up


def test_prompt_longer_than_the_byte_positions_warns(model, monkeypatch):
    """The byte stacks attend within their window (RoPE sees only relative positions), so a longer prompt still
    decodes as the full forward does; it only warns that the model was made for shorter ones."""
    for sub in (model.config.encoder_config, model.config.decoder_config):
        monkeypatch.setattr(sub, "max_position_embeddings", 8)
    ids, _ = encode(["nine byte"])
    with pytest.warns(UserWarning, match=r"the prompt has 9 bytes, more than the byte stacks' max_position_embeddings"):
        out = model.generate(input_ids=ids, max_new_tokens=4, eos_token_id=None)
    assert torch.equal(out, model.generate(input_ids=ids, max_new_tokens=4, eos_token_id=None, use_cache=False))
