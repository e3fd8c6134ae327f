"""hat.generation.generate: HF's `generate` arguments, byte by byte: batching, stopping, sampling, the tokenizer
and streaming."""

import importlib

import pytest
import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextStreamer

from .helpers import EOS, PROMPTS, ForceBytes, encode, generated, make_model, reference_greedy


def test_use_cache_false_is_the_reference(model):
    ids, mask = encode(PROMPTS[:2])
    ref_ids, _ = reference_greedy(model, ids, mask, 12)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None, use_cache=False)
    assert torch.equal(out, ref_ids)


# --------------------------------------------------------------------------------- batching, stopping, sampling
def test_batched_equals_one_by_one(model):
    ids, mask = encode(PROMPTS)
    batched = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None)
    for b, prompt in enumerate(PROMPTS):
        single_ids, _ = encode([prompt])
        single = model.generate(input_ids=single_ids, max_new_tokens=24, eos_token_id=None)
        assert generated(single, single_ids.shape[1]) == generated(batched[b : b + 1], ids.shape[1])


def test_stops_at_eos_and_pads_finished_rows(model):
    ids, mask = encode(PROMPTS)
    T = ids.shape[1]
    free = generated(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None), T)
    # an eos byte that row 0 emits at step k: rows stop at their first occurrence of it, at different steps
    eos = free[0][7]
    stop_at = [row.find(bytes([eos])) for row in free]
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, eos_token_id=eos, pad_token_id=EOS)
    got = generated(out, T)
    expected_len = max(len(r) if s < 0 else s + 1 for r, s in zip(free, stop_at))
    assert out.shape[1] == T + expected_len
    for row, full, s in zip(got, free, stop_at):
        n = len(full) if s < 0 else s + 1
        assert row[:n] == full[:n]  # unchanged up to and including eos (finished rows left the batch)
        assert set(row[n:]) <= {EOS}  # then padding


def test_default_eos_is_192(model):
    assert model.config.eos_token_id == EOS
    ids, mask = encode(["ab"])
    script = b"xy" + bytes([EOS]) + b"zzz"
    out = model.generate(input_ids=ids, max_new_tokens=6,
                         logits_processor=LogitsProcessorList([ForceBytes([script], ids)]))
    assert generated(out, ids.shape[1]) == [b"xy" + bytes([EOS])]


def test_stop_strings(model):
    ids, mask = encode(["Q:", "Antwort:"])
    scripts = ["Hello wörld. Bye now".encode(), "Grüße 😀 und mehr Text".encode()]
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None,
                         stop_strings=["wörld", "😀"], pad_token_id=EOS,
                         logits_processor=LogitsProcessorList([ForceBytes(scripts, ids)]))
    got = generated(out, ids.shape[1])
    assert got[0] == "Hello wörld".encode() + bytes([EOS]) * (len(got[0]) - len("Hello wörld".encode()))
    assert got[1] == "Grüße 😀".encode()
    # custom stopping criteria see the whole batch, as in HF
    class AfterFive(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= ids.shape[1] + 5)

    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None,
                         stopping_criteria=StoppingCriteriaList([AfterFive()]))
    assert out.shape[1] == ids.shape[1] + 5


def test_seeded_sampling_is_reproducible(model):
    ids, mask = encode(PROMPTS)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=True, temperature=0.8, top_k=50,
                  top_p=0.95, eos_token_id=None)
    torch.manual_seed(123)
    a = model.generate(**kwargs)
    torch.manual_seed(123)
    b = model.generate(**kwargs)
    c = model.generate(**kwargs, generator=torch.Generator().manual_seed(7))
    d = model.generate(**kwargs, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(c, d)
    # lockstep draws once per step for the whole batch, like HF's loop: the same draws as the full recompute
    torch.manual_seed(123)
    lockstep = model.generate(**kwargs, word_sync=False)
    torch.manual_seed(123)
    full = model.generate(**kwargs, use_cache=False)
    assert torch.equal(lockstep, full)
    assert not torch.equal(a, c)
    greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, eos_token_id=None)
    assert not torch.equal(a, greedy)


def test_num_return_sequences(model):
    ids, mask = encode(PROMPTS[:2])
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=True, num_return_sequences=3,
                         eos_token_id=None)
    assert out.shape == (6, ids.shape[1] + 8)
    assert torch.equal(out[:3, : ids.shape[1]], ids[:1].expand(3, -1))


def test_bad_inputs_are_rejected(model):
    ids, mask = encode(["abc", "a"])
    right = torch.tensor([[1, 1, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="left padding"):
        model.generate(input_ids=ids, attention_mask=right, max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        model.generate(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="0-255"):
        model.generate(input_ids=ids + 300, max_new_tokens=2)
    with pytest.raises(ValueError, match="unknown"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, not_an_option=1)
    with pytest.raises(ValueError, match=r"no rows \(shape \(0, 5\)\)"):
        model.generate(input_ids=torch.zeros(0, 5, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="integer byte values"):
        model.generate(input_ids=ids.float(), max_new_tokens=2)


# --------------------------------------------------------------------------------- tokenizer and streaming
def test_generate_from_tokenizer_batch(model, tokenizer):
    """The tokenizer's left-padded batch is the prompts' bytes; `generate(**batch)` gives the full-recompute bytes,
    and `batch_decode` their text (invalid UTF-8 as U+FFFD)."""
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    ids, mask = encode(PROMPTS)
    assert torch.equal(batch["attention_mask"].long(), mask)
    assert torch.equal(batch["input_ids"][mask.bool()], ids[mask.bool()])
    out = model.generate(**batch, max_new_tokens=16, eos_token_id=None)
    ref_ids, _ = reference_greedy(model, batch["input_ids"], batch["attention_mask"], 16)
    assert torch.equal(out, ref_ids)
    T = batch["input_ids"].shape[1]
    texts = tokenizer.batch_decode(out[:, T:])
    assert texts == [row.decode("utf-8", errors="replace") for row in generated(out, T)]
    assert tokenizer.batch_decode(out[:, :T], skip_special_tokens=True) == PROMPTS
    assert len(set(texts)) == len(PROMPTS)  # the prompts lead to different continuations


class Capture(TextStreamer):
    def __init__(self, tokenizer):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.chunks: list[str] = []

    def on_finalized_text(self, text, stream_end=False):
        self.chunks.append(text)


def test_streamer_never_prints_half_a_character(model, tokenizer):
    script = "Grüße aus Köln! 漢字かな😀👨‍👩‍👧 ok\nÜber Ärger.".encode()
    ids = torch.tensor([list(b"Text: ")])
    streamer = Capture(tokenizer)
    out = model.generate(input_ids=ids, max_new_tokens=len(script), eos_token_id=None, streamer=streamer,
                         logits_processor=LogitsProcessorList([ForceBytes([script], ids)]))
    assert bytes(out[0, ids.shape[1] :].tolist()) == script
    assert all("\ufffd" not in chunk for chunk in streamer.chunks)
    assert "".join(streamer.chunks) == script.decode()
    assert len([c for c in streamer.chunks if c]) > 3  # it did stream


def test_untrained_model_emitting_invalid_utf8_streams_and_decodes(tokenizer):
    model = make_model(8.0, seed=3)
    ids, _ = encode(["Hallo"])
    streamer = Capture(tokenizer)
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, max_new_tokens=60, do_sample=True, eos_token_id=None, streamer=streamer)
    gen = bytes(out[0, ids.shape[1] :].tolist())
    with pytest.raises(UnicodeDecodeError):
        gen.decode("utf-8")  # the model did emit invalid UTF-8
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "".join(streamer.chunks) == text


# --------------------------------------------------------------------------------- outputs and memory
@pytest.mark.parametrize("word_sync", [False, True])
def test_transition_scores_are_the_log_softmax_of_the_logits(model, word_sync):
    """`compute_transition_scores(..., normalize_logits=True)` on our `scores`: by hand, the log-softmax of each
    step's logits at the chosen byte (rows finish at different steps)."""
    ids, mask = encode(PROMPTS)
    T0 = ids.shape[1]
    free = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, eos_token_id=int(free[0, T0 + 4]),
                         pad_token_id=EOS, word_sync=word_sync, return_dict_in_generate=True, output_scores=True,
                         output_logits=True)
    scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert scores.shape == (len(PROMPTS), out.sequences.shape[1] - T0)
    ended = out.sequences[0, T0 + 5 :]
    assert len(ended) and (ended == EOS).all()  # row 0 ended at step 4
    for b in range(len(PROMPTS)):
        for t in range(scores.shape[1]):
            if t > 4 and b == 0:
                continue  # after its end: a padding byte, scored from zero logits
            by_hand = out.logits[t][b].log_softmax(-1)[out.sequences[b, T0 + t]]
            torch.testing.assert_close(scores[b, t], by_hand, rtol=1e-5, atol=1e-5)


def test_output_buffer_grows_with_the_bytes_generated(model, monkeypatch):
    """The output buffer starts at `FIRST_CHUNK` columns and doubles: runs past it are unchanged, and an absurd
    `max_new_tokens` that ends early allocates nothing up front (it used to ask for 8 TB)."""
    generate_module = importlib.import_module("hat.generation.generate")  # (`hat.generation.generate` is the function)
    ids, mask = encode(PROMPTS[:3])
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=20, eos_token_id=None,
                  stop_strings=["zz"], return_dict_in_generate=True, output_scores=True)
    whole = model.generate(**kwargs)
    monkeypatch.setattr(generate_module, "FIRST_CHUNK", 3)
    for word_sync in (False, True):
        grown = model.generate(**kwargs, word_sync=word_sync)
        assert torch.equal(grown.sequences, whole.sequences)
    free = model.generate(input_ids=ids[:1], max_new_tokens=6, eos_token_id=None)
    out = model.generate(input_ids=ids[:1], max_new_tokens=10**12, eos_token_id=int(free[0, -1]))
    assert torch.equal(out, free)


def test_a_window_beyond_the_text_costs_what_the_text_costs(model):
    """`sliding_window=10**12` (attention over everything): the byte rings hold the prompt and `max_new_tokens`
    bytes, not the window (they used to ask for 256 TB), and cached generation is still the reference."""
    from hat.config import HATConfig, _tiny_sub_configs
    from hat.generation.decoding import BYTE_CACHE_SLACK
    from hat.generation.decoding import prefill

    subs = _tiny_sub_configs()
    for name in ("encoder_config", "decoder_config"):
        subs[name]["sliding_window"] = 10**12
    wide = type(model)(HATConfig(**subs)).eval()
    wide.load_state_dict(model.state_dict())
    ids, mask = encode(PROMPTS[:2])
    new = 24  # prompt + new bytes > the fixture's window of 16: the two models attend differently
    cached = wide.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, eos_token_id=None)
    assert torch.equal(cached, reference_greedy(wide, ids, mask, new)[0])
    state, _ = prefill(wide, ids, mask, max_columns=ids.shape[1] + new)
    assert state.caches.encoder.capacity == state.caches.decoder.capacity == ids.shape[1] + new + BYTE_CACHE_SLACK
