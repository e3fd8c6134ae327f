"""hat.generation.beam: beam search over bytes with the caches equals transformers' own beam search run over the
full forward (no cache) at every step: sequences, beam indices and scores, with eos, length penalties and every
`early_stopping` mode; transition scores add up to the sequence scores."""

import pytest
import torch
from transformers import GenerationMixin

from .helpers import encode, make_model

PROMPTS = ["Hello, world! The quick", "x", "Straße über"]


@pytest.fixture(scope="module")
def beam_model():
    return make_model(4.0, seed=1)


def hf_reference(model, **kwargs):
    """transformers' `generate` (its `_beam_search`) on our model without a cache: the full forward every step."""
    return GenerationMixin.generate(model, use_cache=False, **kwargs)


@pytest.mark.parametrize("length_penalty,early_stopping,eos,do_sample", [
    (0.5, False, 73, False),  # eos 73 ('I') ends some hypotheses early in this model
    (1.0, True, [73, 235], False),
    (2.0, "never", 73, False),
    (-1.0, False, None, False),
    (1.0, False, 73, True),  # beam sampling
])
def test_cached_beam_search_equals_transformers_uncached(beam_model, length_penalty, early_stopping, eos, do_sample):
    ids, mask = encode(PROMPTS)
    kwargs = dict(input_ids=ids, attention_mask=mask, num_beams=3, num_return_sequences=2, max_new_tokens=22,
                  length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=eos, pad_token_id=192,
                  do_sample=do_sample, temperature=0.8 if do_sample else None,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    torch.manual_seed(0)
    ref = hf_reference(beam_model, **kwargs)
    torch.manual_seed(0)
    got = beam_model.generate(**kwargs)
    torch.manual_seed(0)
    uncached = beam_model.generate(**kwargs, use_cache=False)
    for out in (got, uncached):
        assert torch.equal(out.sequences, ref.sequences)
        assert torch.equal(out.beam_indices, ref.beam_indices)
        torch.testing.assert_close(out.sequences_scores, ref.sequences_scores, rtol=1e-4, atol=1e-4)
        assert len(out.scores) == len(ref.scores)
        for a, b in zip(out.scores, ref.scores):
            torch.testing.assert_close(a.clamp(min=-1e4), b.clamp(min=-1e4), rtol=1e-4, atol=4e-4)
    if length_penalty == 0.5:  # hypotheses of many lengths (ended at eos)
        assert len({int(n) for n in (got.beam_indices >= 0).sum(1)}) > 3


def test_transition_scores_add_up_to_the_sequence_scores(beam_model):
    """`compute_transition_scores` on our output: each byte's score is the log-softmax of its beam row's logits at
    that step (checked by hand), and their sum over the length penalty is `sequences_scores`."""
    ids, mask = encode(PROMPTS[:2])
    out = beam_model.generate(input_ids=ids, attention_mask=mask, num_beams=4, num_return_sequences=4,
                              max_new_tokens=15, length_penalty=0.5, eos_token_id=73, pad_token_id=192,
                              return_dict_in_generate=True, output_scores=True, output_logits=True)
    scores = beam_model.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    T0 = ids.shape[1]
    for i in range(out.sequences.shape[0]):
        n = int((out.beam_indices[i] >= 0).sum())
        by_hand = [out.logits[t][out.beam_indices[i, t]].log_softmax(-1)[out.sequences[i, T0 + t]] for t in range(n)]
        torch.testing.assert_close(scores[i, :n], torch.stack(by_hand), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(scores[i, :n].sum() / n**0.5, out.sequences_scores[i], rtol=1e-5, atol=1e-5)
    assert len({int((row >= 0).sum()) for row in out.beam_indices}) > 1  # hypotheses of different lengths


def test_beam_search_output_grows_with_the_bytes_generated(beam_model, monkeypatch):
    """The buffers grow by doubling from `FIRST_CHUNK`: a run past it equals one that never grows, and an absurd
    `max_new_tokens` with an early end allocates nothing up front."""
    import hat.generation.beam

    ids, mask = encode(PROMPTS[:2])
    kwargs = dict(input_ids=ids, attention_mask=mask, num_beams=2, max_new_tokens=12, eos_token_id=None)
    whole = beam_model.generate(**kwargs)
    monkeypatch.setattr(hat.generation.beam, "FIRST_CHUNK", 3)
    assert torch.equal(beam_model.generate(**kwargs), whole)
    out = beam_model.generate(input_ids=ids, attention_mask=mask, num_beams=3, max_new_tokens=10**12,
                              eos_token_id=73, early_stopping=True)
    assert out.shape[1] < ids.shape[1] + 100


def test_beam_options_are_checked(beam_model):
    ids, mask = encode(PROMPTS[:1])
    with pytest.raises(ValueError, match="num_return_sequences"):
        beam_model.generate(input_ids=ids, num_beams=2, num_return_sequences=3, max_new_tokens=2)
    with pytest.raises(ValueError, match="streamer"):
        beam_model.generate(input_ids=ids, num_beams=2, max_new_tokens=2, streamer=object())
    with pytest.raises(ValueError, match="generator"):
        beam_model.generate(input_ids=ids, num_beams=2, max_new_tokens=2, do_sample=True,
                            generator=torch.Generator())
    out = beam_model.generate(input_ids=ids, num_beams=3, num_return_sequences=3, max_new_tokens=6,
                              eos_token_id=None)
    assert out.shape == (3, ids.shape[1] + 6) and len({tuple(r.tolist()) for r in out}) == 3


def test_beam_hypotheses_end_at_stop_strings_and_keep_hidden_states(beam_model):
    ids, mask = encode(PROMPTS[:2])
    T0 = ids.shape[1]
    out = beam_model.generate(input_ids=ids, attention_mask=mask, num_beams=3, num_return_sequences=3,
                              max_new_tokens=16, eos_token_id=None, pad_token_id=192, stop_strings=["I"],
                              length_penalty=0.0, return_dict_in_generate=True, output_hidden_states=True)
    lengths = (out.beam_indices >= 0).sum(1)
    for row, n in zip(out.sequences, lengths.tolist()):
        assert n == 16 or row[T0 + n - 1] == ord("I")  # a hypothesis ends at the stop string or the limit
        assert b"I" not in bytes(row[T0 : T0 + n - 1].tolist())
    assert (lengths < 16).any()
    E, layers = beam_model.config.decoder_config.hidden_size, beam_model.config.decoder_config.num_hidden_layers
    assert [h.shape for h in out.hidden_states[0]] == [(6, T0, E)] * (layers + 1)  # 2 prompts x 3 beams
    assert [h.shape for h in out.hidden_states[-1]] == [(6, 1, E)] * (layers + 1)
