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
