"""Generation on CPU with tiny random models: cached decoding == full recompute, batching, stopping, sampling,
streaming and the `hat-generate` CLI.

The reference is defined as: at each step, segment the whole current sequence with the splitter's byte rule, run
the full forward and take the last position's logits (`reference_greedy` below, written without hat.generation).
"""

import io
import sys

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextStreamer

from hat import HATConfig, HATForCausalLM

EOS = 192
PROMPTS = [
    "Hello, world! The quick",  # ends mid-word: the last prompt word is continued
    "Straße\nÜber die Brücke\nÄ",  # German, words starting with Ü/Ä after a newline
    "emoji 😀👍 and 漢字",
    "x",
]


def make_model(scale: float, seed: int = 0, **config) -> HATForCausalLM:
    """HATConfig.tiny() (sliding window 16) with weights scaled up so that greedy outputs vary with the input."""
    torch.manual_seed(seed)
    model = HATForCausalLM(HATConfig.tiny(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


@pytest.fixture(scope="module")
def model():
    return make_model(4.0)


@pytest.fixture(scope="module")
def tokenizer():
    from hat.tokenizer import build_tokenizer

    return build_tokenizer()


def left_pad(rows: list[bytes], pad: int = EOS) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[b, T - len(r) :] = 1
    return ids, mask


def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return left_pad([t.encode("utf-8") for t in texts])


@torch.no_grad()
def reference_greedy(model, ids, mask, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding by full recompute: the whole sequence through `model(...)` at every step."""
    logits_per_step = []
    for _ in range(steps):
        logits = model(ids, attention_mask=mask).logits[:, -1]  # the splitter segments the whole sequence
        logits_per_step.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids, logits_per_step


class ForceBytes(LogitsProcessor):
    """Makes the row with prompt `prompts[i]` generate `scripts[i]` byte by byte (its logits are still computed).

    Rows are recognised by their prompt, not their index, so it also works on the row groups that `word_sync` passes.
    """

    def __init__(self, scripts: list[bytes], prompts: torch.Tensor):
        self.prompt_len = prompts.shape[1]
        self.scripts = {tuple(p.tolist()): s for p, s in zip(prompts, scripts)}

    def __call__(self, input_ids, scores):
        i = input_ids.shape[1] - self.prompt_len
        forced = torch.full_like(scores, float("-inf"))
        for b, row in enumerate(input_ids):
            script = self.scripts[tuple(row[: self.prompt_len].tolist())]
            forced[b, script[min(i, len(script) - 1)]] = 0
        return forced


def generated(out: torch.Tensor, prompt_len: int) -> list[bytes]:
    return [bytes(row[prompt_len:].tolist()) for row in out]


# --------------------------------------------------------------------------------- cached == full recompute
@pytest.mark.parametrize("scale", [4.0, 8.0])
def test_cached_greedy_equals_full_recompute(scale):
    model = make_model(scale, seed=1)
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
    """Layers `hat.fused` cannot fuse run as themselves: both paths give the same bytes and logits."""
    import hat.decoding

    ids, mask = encode(PROMPTS)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True)
    fused = model.generate(**kwargs)
    monkeypatch.setattr(hat.decoding, "fused_stack", lambda owner, layers: None)
    plain = model.generate(**kwargs)
    assert torch.equal(fused.sequences, plain.sequences)
    for got, want in zip(fused.logits, plain.logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=4e-4)


def test_use_cache_false_is_the_reference(model):
    ids, mask = encode(PROMPTS[:2])
    ref_ids, _ = reference_greedy(model, ids, mask, 12)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None, use_cache=False)
    assert torch.equal(out, ref_ids)


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


def test_backbone_runs_once_per_completed_word(model):
    """Word-level work: the backbone sees one row per completed word, never one per byte."""
    from hat.splitter import word_lengths_from_bytes

    script = "Die Brücke über den Fluss ist alt, aber schön.".encode()
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


# --------------------------------------------------------------------------------- batching, stopping, sampling
def test_batched_equals_one_by_one(model):
    ids, mask = encode(PROMPTS)
    batched = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, eos_token_id=None)
    for b, prompt in enumerate(PROMPTS):
        single_ids, _ = encode([prompt])
        single = model.generate(input_ids=single_ids, max_new_tokens=24, eos_token_id=None)
        assert generated(single, single_ids.shape[1]) == generated(batched[b : b + 1], ids.shape[1])


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
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, num_beams=2)
    with pytest.raises(ValueError, match="unknown"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, not_an_option=1)


# --------------------------------------------------------------------------------- tokenizer and streaming
def test_generate_from_tokenizer_batch(model, tokenizer):
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**batch, max_new_tokens=16, eos_token_id=None)
    T = batch["input_ids"].shape[1]
    texts = tokenizer.batch_decode(out[:, T:])
    assert len(texts) == len(PROMPTS) and all(isinstance(t, str) for t in texts)
    ids, mask = encode(PROMPTS)
    assert torch.equal(out[:, T:], model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16,
                                                  eos_token_id=None)[:, ids.shape[1]:])


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


# --------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, model, tokenizer):
    path = tmp_path_factory.mktemp("hat_cli")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(args: list[str], stdin: str = "", monkeypatch=None, capsys=None) -> str:
    from hat.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(args) == 0
    return capsys.readouterr().out


def test_cli_one_shot_streams_the_chat_answer(saved_model, model, tokenizer, monkeypatch, capsys):
    printed = run_cli([str(saved_model), "--prompt", "Hallo, wie geht's?", "--max-new-tokens", "12", "--seed", "0"],
                      monkeypatch=monkeypatch, capsys=capsys)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hallo, wie geht's?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=True, temperature=0.7, top_p=0.9, top_k=0)
    assert printed == tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True) + "\n"


def test_cli_raw_completion_greedy(saved_model, model, tokenizer, monkeypatch, capsys):
    printed = run_cli([str(saved_model), "--prompt", "Straße", "--no-chat", "--temperature", "0",
                       "--max-new-tokens", "10"], monkeypatch=monkeypatch, capsys=capsys)
    ids, _ = encode(["Straße"])
    out = model.generate(input_ids=ids, max_new_tokens=10)
    assert printed == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) + "\n"


def test_cli_interactive_chat_from_stdin(saved_model, model, tokenizer, monkeypatch, capsys):
    printed = run_cli([str(saved_model), "--max-new-tokens", "6", "--temperature", "0"],
                      stdin="Hallo!\n\n/reset\nNoch eine Frage\n", monkeypatch=monkeypatch, capsys=capsys)
    expected = ""
    for question in ("Hallo!", "Noch eine Frage"):  # /reset: the second turn starts a fresh conversation
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**prompt, max_new_tokens=6)
        expected += tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True) + "\n"
    assert printed == expected


def test_cli_without_saved_tokenizer_uses_the_byte_tokenizer(tmp_path, model, tokenizer, monkeypatch, capsys):
    model.save_pretrained(tmp_path)
    printed = run_cli([str(tmp_path), "--prompt", "Öl", "--no-chat", "--temperature", "0", "--max-new-tokens", "5"],
                      monkeypatch=monkeypatch, capsys=capsys)
    ids, _ = encode(["Öl"])
    out = model.generate(input_ids=ids, max_new_tokens=5)
    assert printed == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) + "\n"
