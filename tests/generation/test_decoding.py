"""hat.generation.decoding: cached decoding equals the full recompute at every step, with the byte caches wrapping
around, words that start with multi-byte characters, words cut at max_word_size, and rows waiting for each other."""

import pytest
import torch
from transformers import LogitsProcessorList

from .helpers import EOS, PROMPTS, ForceBytes, encode, generated, left_pad, make_model, reference_greedy


# --------------------------------------------------------------------------------- prefill
def test_prefill_is_the_forward_and_books_each_rows_words(model):
    from hat.generation.decoding import prefill
    from hat.splitter import word_lengths_from_bytes

    ids, mask = encode(PROMPTS)
    state, logits = prefill(model, ids, mask)
    torch.testing.assert_close(logits, model(ids, attention_mask=mask).logits[:, -1], rtol=0, atol=0)
    T = ids.shape[1]
    for prompt, row in zip(PROMPTS, state.rows):
        lengths = word_lengths_from_bytes(prompt.encode(), {EOS}, 100)
        assert (row.length, row.num_words, row.word_start) == (T, len(lengths) - 1, T - lengths[-1])
        assert row.pending == [] and row.redo == []
    assert state.pad.tolist() == [T - len(p.encode()) for p in PROMPTS]


# --------------------------------------------------------------------------------- cached == full recompute
@pytest.mark.parametrize("scale, extra_key", [(4.0, False), (8.0, False), (4.0, True)])
def test_cached_greedy_equals_full_recompute(scale, extra_key):
    """Also with the other window convention (`sliding_window_extra_key`: W + 1 keys per byte)."""
    model = make_model(scale, seed=1, sliding_window_extra_key=extra_key)
    ids, mask = encode(PROMPTS)
    steps = 40  # prompts + 40 bytes > the tiny model's 16-byte window: the byte caches wrap around
    ref_ids, ref_logits = reference_greedy(model, ids, mask, steps)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None,
                         return_dict_in_generate=True, output_logits=True)
    assert torch.equal(out.sequences, ref_ids)
    for step, (got, want) in enumerate(zip(out.logits, ref_logits)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=f"step {step}")
    # the outputs are varied (not one constant argmax) and include bytes that are not valid UTF-8 on their own
    gen = b"".join(generated(ref_ids, ids.shape[1]))
    assert len(set(gen)) > 20
    assert any(b >= 0x80 for b in gen)


def test_single_unpadded_row_equals_full_recompute_across_the_window():
    """One unpadded row steps without an attention mask until it outgrows the byte window (16), then with one."""
    model = make_model(4.0, seed=2)
    ids, mask = encode(["Hi"])
    ref_ids, ref_logits = reference_greedy(model, ids, mask, 30)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None,
                         return_dict_in_generate=True, output_logits=True)
    assert torch.equal(out.sequences, ref_ids)
    for step, (got, want) in enumerate(zip(out.logits, ref_logits)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=4e-4, msg=f"step {step}")


def test_unfused_byte_layers_give_the_same_output(model, monkeypatch):
    """Layers `hat.generation.fused` cannot fuse run as themselves: both paths give the same bytes and logits."""
    import hat.generation.decoding

    ids, mask = encode(PROMPTS)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True)
    fused = model.generate(**kwargs)
    monkeypatch.setattr(hat.generation.decoding, "fused_stack", lambda layers: None)
    plain = model.generate(**kwargs)
    assert torch.equal(fused.sequences, plain.sequences)
    for got, want in zip(fused.logits, plain.logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=4e-4)


SCRIPTS = [
    # multi-byte first chars of new words: "Ü"/"Ä" after "\n", CJK ideographs (one word each), an emoji after
    # punctuation, a ZWJ sequence, an incomplete char cut short by another byte, a special byte, stray bytes
    "Größe\nÜber\nÄrger 漢字かな!😀 ok👨‍👩‍👧.".encode() + b"\xe4\xb8A\xc0\x80\xff end",
    "Hi!😀\nÖl, 中文。über".encode() + b"\xf0\x9f\x98 \xc3\xa4h \xc3",
    "plain English words, and 3.14159 numbers.".encode(),
]


@pytest.mark.parametrize("scale,word_sync", [(1.0, False), (4.0, False), (4.0, True)])
def test_forced_multibyte_word_starts_match_reference(scale, word_sync):
    """Bytes moved into a new word (multi-byte first char) are re-decoded: every step's logits equal the reference."""
    model = make_model(scale, seed=2)
    ids, mask = encode(["Anfang:", "Start\n", "a"])
    steps = max(len(s) for s in SCRIPTS)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True)
    cached = model.generate(**kwargs, logits_processor=LogitsProcessorList([ForceBytes(SCRIPTS, ids)]),
                            word_sync=word_sync)
    full = model.generate(**kwargs, logits_processor=LogitsProcessorList([ForceBytes(SCRIPTS, ids)]),
                          use_cache=False)
    assert torch.equal(cached.sequences, full.sequences)
    assert generated(cached.sequences, ids.shape[1])[0] == SCRIPTS[0]
    for step, (got, want) in enumerate(zip(cached.logits, full.logits)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale, msg=f"step {step}")


def test_words_cut_at_max_word_size_match_reference():
    """Words longer than max_word_size are cut into chunks (a chunk is complete once it is full, a multi-byte char
    that does not fit moves to the next chunk): cached logits still equal the reference at every step."""
    model = make_model(4.0, seed=4, max_word_size=8)
    scripts = ["abcdefghijklmnopqrs üüüüüüü 漢字漢字漢字 x".encode(), "Donaudampfschifffahrt\nÄÖÜäöüß!".encode()]
    ids, mask = encode(["Wort:", "Lang"])
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=max(map(len, scripts)), eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True,
                  logits_processor=LogitsProcessorList([ForceBytes(scripts, ids)]))
    cached, full = model.generate(**kwargs, word_sync=True), model.generate(**kwargs, use_cache=False)
    assert torch.equal(cached.sequences, full.sequences)
    for step, (got, want) in enumerate(zip(cached.logits, full.logits)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=4e-4, msg=f"step {step}")


def test_prompt_ending_inside_a_character(model):
    """A prompt cut inside a multi-byte character: the character's first bytes move into the next word."""
    rows = ["Grüße\n".encode() + "Ü".encode()[:1], "漢".encode() + "字".encode()[:2], b"ab\xe4\xb8"]
    ids, mask = left_pad(rows)
    ref_ids, ref_logits = reference_greedy(model, ids, mask, 16)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, eos_token_id=None,
                         return_dict_in_generate=True, output_logits=True)
    assert torch.equal(out.sequences, ref_ids)
    for got, want in zip(out.logits, ref_logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=4e-4)


@pytest.mark.parametrize("script", [
    "Die Brücke über den Fluss ist alt, aber schön.".encode(),
    # invalid UTF-8 (ARCHITECTURE.md §5): a stray byte ends the word before it and is a word of its own, so words
    # go on ending after it (a rule that waits for the word to decode would never end this one)
    b"Wort\xff und \x80\x80noch mehr W\xf6rter, \xe4\xb8 weiter.",
])
def test_backbone_runs_once_per_completed_word(model, script):
    """Word-level work: the backbone sees one row per completed word, never one per byte."""
    from hat.splitter import word_lengths_from_bytes

    ids, mask = encode(["Heute:"])
    rows_seen = []
    hook = model.model.backbone.register_forward_pre_hook(lambda m, args: rows_seen.append(args[0].shape[:2]))
    try:
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=len(script), eos_token_id=None,
                             logits_processor=LogitsProcessorList([ForceBytes([script], ids)]))
    finally:
        hook.remove()
    text = bytes(out[0].tolist())
    n_words = len(word_lengths_from_bytes(text, {EOS}, 100))
    n_prompt_words = len(word_lengths_from_bytes(bytes(ids[0].tolist()), {EOS}, 100))
    prefill, steps = rows_seen[0], rows_seen[1:]
    assert prefill == (1, n_prompt_words)
    assert all(shape == (1, 1) for shape in steps)  # one word, one row per step
    assert len(steps) == n_words - n_prompt_words  # every word but the (unfinished) last one
    if b"\xff" in script:
        # "Wort", ff, " und", " ", 80, 80, "noch"
        assert word_lengths_from_bytes(script, {EOS}, 100)[:7] == [4, 1, 4, 1, 1, 1, 4]


def test_word_sync_runs_the_backbone_for_many_rows_at_once(model):
    """Rows that completed a word wait for the others: fewer, fuller backbone calls, and the same bytes as lockstep."""
    ids, mask = encode(PROMPTS)
    scripts = ["Die Brücke über den Fluss ist alt.".encode(), b"a bb ccc dddd eeeee ffffff gg hhh",
               "one two three four five six seven".encode(), "Wörter, Wörter und noch mehr Wörter".encode()]
    calls = []
    hook = model.model.backbone.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    outs, rows = {}, {}
    try:
        for word_sync in (False, True):
            for forced in (False, True):
                calls.clear()
                processors = LogitsProcessorList([ForceBytes(scripts, ids)]) if forced else None
                outs[word_sync, forced] = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=30, eos_token_id=None, word_sync=word_sync,
                    logits_processor=processors, return_dict_in_generate=True, output_logits=True)
                rows[word_sync, forced] = calls[1:]  # after the prefill
    finally:
        hook.remove()
    for forced in (False, True):
        assert torch.equal(outs[True, forced].sequences, outs[False, forced].sequences)
        for a, b in zip(outs[True, forced].logits, outs[False, forced].logits):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=4e-4)
    # the same words go through the backbone, in fewer calls
    assert sum(rows[True, True]) == sum(rows[False, True])
    assert len(rows[True, True]) < len(rows[False, True]) / 2  # twice as many rows per call, or more
