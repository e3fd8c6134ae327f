"""hat.model.modeling: `HATModel` on CPU at tiny size: causality, padding, bad input, the step methods."""

import pytest
import torch

from conftest import encode
from hat import HATConfig, HATModel

TEXTS = [
    "Hello, world! HAT models read bytes.",
    "Straße über 3.14159 und 1,000 Äpfel",
    "emoji 👨‍👩‍👧 and 漢字 too",
]


# ----------------------------------------------------------------------------------------- causality, padding
def test_future_bytes_never_change_past_logits(tiny_model):
    text = "The quick brown fox jumps over the lazy dog."
    ids, _ = encode([text])
    ref = tiny_model(ids).logits
    for cut in (5, 17, len(ids[0]) - 1):  # mid-word, after a space, last byte
        changed = ids.clone()
        changed[0, cut:] = torch.tensor(list(b"Zq!" * 20)[: ids.shape[1] - cut])
        out = tiny_model(changed).logits
        torch.testing.assert_close(out[:, :cut], ref[:, :cut], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, cut:], ref[:, cut:])  # the change is visible from there on


def test_prefix_logits_equal_full_logits(tiny_model):
    """Causality through the splitter: a prefix ending mid-word gives the logits of the full text's prefix."""
    text = "Worte werden aus Bytes gebildet, Wort für Wort."
    ids, _ = encode([text])
    full = tiny_model(ids).logits
    for cut in range(1, ids.shape[1], 7):
        torch.testing.assert_close(tiny_model(ids[:, :cut]).logits, full[:, :cut], rtol=0, atol=1e-5)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_equals_rows_one_by_one(tiny_model, padding_side):
    ids, mask = encode(TEXTS, padding_side)
    batched = tiny_model(ids, attention_mask=mask).logits
    for b, text in enumerate(TEXTS):
        single = tiny_model(encode([text])[0]).logits[0]
        torch.testing.assert_close(batched[b][mask[b].bool()], single, rtol=0, atol=1e-5)


def test_empty_row_in_batch(tiny_model):
    ids, mask = encode(["abc def", "x"])
    mask[1] = 0  # a row with no bytes at all
    out = tiny_model(ids, attention_mask=mask).logits
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], tiny_model(ids[:1]).logits[0], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="byte values 0-255"):
        tiny_model(torch.tensor([[1, 2, 256]]))
    with pytest.raises(ValueError, match=r"\(batch, bytes\)"):
        tiny_model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="contiguous"):
        tiny_model(torch.tensor([[65, 66, 67]]), attention_mask=torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="word lengths add up to 2 bytes"):
        tiny_model(torch.tensor([[65, 66, 67]]), word_lengths=[[1, 1]])


def test_control_characters_nul_and_invalid_utf8_run(tiny_model):
    """Bytes that are not text are words by the byte rule (ARCHITECTURE.md §1), the model stays causal on them, and
    its loss is the next-byte cross-entropy."""
    data = b"a\x00b\x01\x1b[0m\r\n\t\xff\xfe\x80abc\xe2\x82 \xc0end"
    ids = torch.tensor([list(data)])
    out = tiny_model(ids, labels=ids)
    lengths = tiny_model.model(ids).word_lengths[0].tolist()
    words = [data[sum(lengths[:i]) : sum(lengths[: i + 1])] for i in range(len(lengths))]
    for word in (b"\x00", b"\x01", b"\t", b"\xff", b"\xfe", b"\x80", b"\xc0"):  # controls, invalid and special bytes
        assert word in words, word
    assert b"abc\xe2\x82" in words  # an incomplete character joins the word before it
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])
    torch.testing.assert_close(out.loss, expected)
    for cut in (2, 9, 13, 17, 19, len(data) - 2):  # after NUL, in the invalid run, inside the cut-off character
        torch.testing.assert_close(tiny_model(ids[:, :cut]).logits, out.logits[:, :cut], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ word lengths given
def test_collator_word_lengths_tensor_skips_the_splitter(tiny_model, monkeypatch):
    """Word lengths as the collator passes them, a (B, W) tensor right-padded with 0: no splitting in `forward`,
    and the logits of the model's own split."""
    ids, mask = encode(TEXTS, "right")
    ref = tiny_model.model(ids, attention_mask=mask)
    lengths = ref.word_lengths
    assert lengths.shape[0] == len(TEXTS) and (lengths[:, -1] == 0).any()  # right-padded rows

    def no_split(*args):
        raise AssertionError("forward split words although word_lengths were given")

    monkeypatch.setattr(HATModel, "word_lengths", no_split)
    given = tiny_model.model(ids, attention_mask=mask, word_lengths=lengths)
    torch.testing.assert_close(given.last_hidden_state, ref.last_hidden_state, rtol=0, atol=0)
    as_lists = [[n for n in row if n] for row in lengths.tolist()]
    torch.testing.assert_close(tiny_model(ids, attention_mask=mask, word_lengths=as_lists).logits,
                               tiny_model(ids, attention_mask=mask, word_lengths=lengths).logits, rtol=0, atol=0)


def test_other_word_lengths_change_the_output(tiny_model):
    ids, _ = encode(["abcdef"])
    a = tiny_model(ids, word_lengths=torch.tensor([[6]])).logits
    b = tiny_model(ids, word_lengths=torch.tensor([[3, 3]])).logits
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=1e-6)  # word 0's bytes see only word 0's prediction
    assert not torch.allclose(a[:, 3:], b[:, 3:])


# ------------------------------------------------------------------------------------------ the step methods
def test_step_methods_compose_to_forward(tiny_model):
    """`forward` is `layout -> encode -> pool -> run_backbone -> predict_words -> word_conditioning -> decode`, which
    callers may also run one at a time (stage-1 training on the first k backbone layers, a decoder fed from outside)."""
    hat = tiny_model.model
    ids, mask = encode(TEXTS, "left")
    out = hat(ids, attention_mask=mask)
    layout = hat.layout(ids, mask)
    config = hat.config
    byte_mask = layout.byte_mask(config.encoder_config.sliding_window, torch.float32)
    byte_states = hat.encode(ids, byte_mask, layout.byte_positions)  # (B, T, E)
    word_embeds = hat.pool(byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                           layout.word_positions)  # (B, W, D)
    word_states = hat.run_backbone(word_embeds, layout.word_mask(torch.float32), layout.word_positions)
    decoded = hat.decode(byte_states, hat.word_conditioning(hat.predict_words(word_states)), layout.byte_word,
                         layout.byte_mask(config.decoder_config.sliding_window, torch.float32), layout.byte_positions)
    assert byte_states.shape == (3, ids.shape[1], config.encoder_config.hidden_size)
    assert word_embeds.shape == word_states.shape == (3, layout.word_valid.shape[1], config.backbone_config.hidden_size)
    torch.testing.assert_close(byte_states, out.encoder_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(word_states, out.word_hidden_states, rtol=0, atol=0)
    torch.testing.assert_close(decoded, out.last_hidden_state, rtol=0, atol=0)
    # the first k blocks: the same as the full backbone with only k blocks
    first = hat.run_backbone(word_embeds, layout.word_mask(torch.float32), layout.word_positions, num_layers=1)
    assert not torch.allclose(first, word_states)
    small = HATModel(HATConfig.tiny()).eval()
    small.load_state_dict(hat.state_dict())
    small.backbone.layers = small.backbone.layers[:1]
    torch.testing.assert_close(first, small(ids, attention_mask=mask).word_hidden_states, rtol=0, atol=0)


def test_byte_layers_and_position_embeddings_are_the_stacks(tiny_model):
    hat = tiny_model.model
    encoder_layers, decoder_layers = hat.byte_layers()
    assert len(encoder_layers) == hat.config.encoder_config.num_hidden_layers
    assert len(decoder_layers) == hat.config.decoder_config.num_hidden_layers
    positions = torch.arange(5)[None]
    (cos, sin), _ = hat.byte_position_embeddings(positions)
    x = torch.zeros(1, 5, hat.config.encoder_config.hidden_size)
    expected = hat.encoder.rotary_emb(x, positions)
    torch.testing.assert_close(cos, expected[0])
    torch.testing.assert_close(sin, expected[1])


# ----------------------------------------------------------------------------------------- packed documents
# Longer than the tiny window (16 bytes), special and invalid bytes, one a single byte: every document as it is alone
DOCUMENTS = [
    "Hello, world! This first document is longer than the byte window.".encode(),
    "Zweites Dokument: Straße über Brücken.".encode() + bytes([192]),
    b"x",
    "emoji 👍🏽 and a stray byte".encode() + b"\xc0\xff" + b" end",
]


def packed_row(documents: list[bytes]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One padding-free row as TRL's collator makes it: the bytes, position_ids restarting at 0, cu_seq_lens."""
    ids = torch.tensor([[b for d in documents for b in d]])
    position_ids = torch.cat([torch.arange(len(d)) for d in documents])[None]
    cu_seq_lens = torch.tensor([0, *torch.tensor([len(d) for d in documents]).cumsum(0).tolist()], dtype=torch.int32)
    return ids, position_ids, cu_seq_lens


def test_packed_documents_are_scored_as_if_alone(tiny_model):
    """Every document of a packed row has the logits it has alone, whichever form marks the documents: per-document
    attention in encoder, backbone and decoder, words split per document, positions restarting."""
    alone = torch.cat([tiny_model(torch.tensor([list(d)])).logits[0] for d in DOCUMENTS])  # (T, 256)
    ids, position_ids, cu_seq_lens = packed_row(DOCUMENTS)
    seq_idx = torch.repeat_interleave(torch.arange(len(DOCUMENTS)), cu_seq_lens.diff())[None]
    for marks in ({"position_ids": position_ids}, {"cu_seq_lens_q": cu_seq_lens}, {"seq_idx": seq_idx}):
        packed = tiny_model(ids, **marks).logits[0]
        torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5, msg=str(list(marks)))
    # Without the marks the documents read each other: the test can fail
    assert not torch.allclose(tiny_model(ids).logits[0], alone, atol=1e-3)


def test_packed_rows_with_padding_and_the_bare_model(tiny_model):
    """Two packed rows, right-padded, through `model.model` (TRL's fused-head path): each document as alone."""
    rows = [DOCUMENTS[:2], DOCUMENTS[2:]]
    T = max(sum(map(len, row)) for row in rows)
    ids = torch.full((2, T), 192)
    position_ids, mask = torch.zeros(2, T, dtype=torch.long), torch.zeros(2, T, dtype=torch.long)
    for b, row in enumerate(rows):
        row_ids, row_positions, _ = packed_row(row)
        n = row_ids.shape[1]
        ids[b, :n], position_ids[b, :n], mask[b, :n] = row_ids[0], row_positions[0], 1
    states = tiny_model.model(ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    for b, row in enumerate(rows):
        alone = torch.cat([tiny_model.model(torch.tensor([list(d)])).last_hidden_state[0] for d in row])
        torch.testing.assert_close(states[b, : alone.shape[0]], alone, rtol=0, atol=1e-5)


def test_position_ids_that_do_not_restart_change_nothing(tiny_model):
    """position_ids 0..T-1 (what HF code passes for a plain row) are one document: the logits without them."""
    ids, mask = encode(TEXTS, "left")
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0).masked_fill(mask == 0, 1)  # HF's positions for left padding
    torch.testing.assert_close(tiny_model(ids, attention_mask=mask, position_ids=position_ids).logits,
                               tiny_model(ids, attention_mask=mask).logits, rtol=0, atol=0)


def test_word_across_packed_documents_is_refused(tiny_model):
    ids, position_ids, _ = packed_row([b"ab", b"cd"])
    with pytest.raises(ValueError, match="row 0: word 0 \\(3 bytes\\) spans two packed documents"):
        tiny_model(ids, position_ids=position_ids, word_lengths=[[3, 1]])
    with pytest.raises(ValueError, match="cannot fill generation caches"):
        tiny_model.model(ids, position_ids=position_ids, past_key_values=object())


# ----------------------------------------------------------------------------------------- the sliding window
def test_sliding_window_extra_key_sees_one_byte_more(tiny_model):
    """`sliding_window_extra_key`: W + 1 keys per byte, i.e. the model with window W + 1; by default W keys."""
    from hat import HATForCausalLM

    def with_window(window: int, extra: bool) -> HATForCausalLM:
        raw = tiny_model.config.to_dict()
        raw.pop("sliding_window")
        for name in ("encoder_config", "decoder_config"):
            raw[name]["sliding_window"] = window
        model = HATForCausalLM(HATConfig(**raw, sliding_window_extra_key=extra)).eval()
        model.load_state_dict(tiny_model.state_dict())
        return model

    W = tiny_model.config.sliding_window
    ids, _ = encode(["A text much longer than the tiny model's window of sixteen bytes."])
    extra = with_window(W, True)
    assert extra.model.byte_windows == (W + 1, W + 1) and tiny_model.model.byte_windows == (W, W)
    torch.testing.assert_close(extra(ids).logits, with_window(W + 1, False)(ids).logits, rtol=0, atol=0)
    default = tiny_model(ids).logits
    torch.testing.assert_close(default[:, :W], extra(ids).logits[:, :W], rtol=0, atol=1e-6)  # inside the window
    assert not torch.allclose(default[:, W:], extra(ids).logits[:, W:], atol=1e-4)  # beyond it they differ


def test_rows_longer_than_the_byte_positions_warn(tiny_model):
    """A row longer than the byte stacks' max_position_embeddings runs (the windows keep attention defined) but
    says so; within the limit nothing is said."""
    import warnings

    from hat import HATForCausalLM

    short = HATConfig.tiny()
    for name in ("encoder_config", "decoder_config"):
        getattr(short, name).max_position_embeddings = 8
    model = HATForCausalLM(short).eval()
    with pytest.warns(UserWarning, match=r"rows of 12 bytes, more than the byte stacks' max_position_embeddings \(8\)"):
        model(torch.tensor([list(b"Hello world!")]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.tensor([list(b"Hello")]))
