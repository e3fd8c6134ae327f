"""The core model on CPU at tiny size: causality, padding, TRL's fused head, checkpoints, Llama parity."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from conftest import encode
from hat import HATConfig, HATForCausalLM
from hat.model.layout import build_layout
from hat.model.parts import INERT_PARAMETERS

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


# ----------------------------------------------------------------------------------------------- losses
def test_loss_is_next_byte_cross_entropy(tiny_model):
    ids, mask = encode(TEXTS[:2])
    out = tiny_model(ids, attention_mask=mask, labels=ids)
    logits, labels = out.logits[:, :-1], ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_trl_fused_lm_head_loss_equals_forward_loss(tiny_model):
    from trl.trainer.utils import add_fused_lm_head

    ids, mask = encode(TEXTS, "right")
    labels = ids.masked_fill(mask == 0, -100)
    expected = tiny_model(ids, attention_mask=mask, labels=labels).loss
    add_fused_lm_head(tiny_model)
    fused = tiny_model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    torch.testing.assert_close(fused.loss, expected, rtol=1e-5, atol=1e-6)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = HATForCausalLM(HATConfig.tiny()).train()
    ids, _ = encode(["abc abc abc abc abc abc abc abc"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = HATForCausalLM(HATConfig.tiny()).train()
    ids, _ = encode(["gradient checkpointing, Wort für Wort"])
    model(ids, labels=ids).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()  # what Trainer calls
    model(ids, labels=ids).loss.backward()
    for name, grad in ref.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)


def test_inert_parameters_are_frozen_and_get_no_gradient(tiny_model):
    frozen = [n for n, p in tiny_model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.endswith(INERT_PARAMETERS) and ".decoder_layers." in n for n in frozen)
    # Changing them does not change the output: each byte attends to exactly one key.
    ids, _ = encode(["inert weights"])
    ref = tiny_model(ids).logits
    with torch.no_grad():
        for n, p in tiny_model.named_parameters():
            if n in frozen:
                p.add_(torch.randn_like(p))
    torch.testing.assert_close(tiny_model(ids).logits, ref)


# ----------------------------------------------------------------------------------------------- checkpoints
def release_keys(config: HATConfig) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of a released TFree-HAT checkpoint, written out from the release's naming scheme."""
    enc, bb, dec = config.encoder_config, config.backbone_config, config.decoder_config

    def llama_layer(prefix, c):
        hd, kv = c.head_dim, c.num_key_value_heads * c.head_dim
        return {
            f"{prefix}.self_attn.q_proj.weight": (c.num_attention_heads * hd, c.hidden_size),
            f"{prefix}.self_attn.k_proj.weight": (kv, c.hidden_size),
            f"{prefix}.self_attn.v_proj.weight": (kv, c.hidden_size),
            f"{prefix}.self_attn.o_proj.weight": (c.hidden_size, c.num_attention_heads * hd),
            f"{prefix}.mlp.gate_proj.weight": (c.intermediate_size, c.hidden_size),
            f"{prefix}.mlp.up_proj.weight": (c.intermediate_size, c.hidden_size),
            f"{prefix}.mlp.down_proj.weight": (c.hidden_size, c.intermediate_size),
            f"{prefix}.input_layernorm.weight": (c.hidden_size,),
            f"{prefix}.post_attention_layernorm.weight": (c.hidden_size,),
        }

    def cross(prefix, x):
        kv = x.attention_num_kv_heads * x.head_dim
        return {
            f"{prefix}.q_proj.weight": (x.hidden_size, x.hidden_size_q),
            f"{prefix}.k_proj.weight": (kv, x.hidden_size_kv),
            f"{prefix}.v_proj.weight": (kv, x.hidden_size_kv),
            f"{prefix}.o_proj.weight": (x.hidden_size_q, x.hidden_size),
        }

    keys = {"encoder.embedding_layer.weight": (256, enc.hidden_size)}
    for i in range(enc.num_hidden_layers):
        keys |= llama_layer(f"encoder.layers.{i}", enc)
    keys["encoder_connector.latent_query"] = (1, 1, bb.hidden_size)
    keys |= cross("encoder_connector.cross_attention_encoder_connector", enc.cross_attention_config)
    for i in range(bb.num_hidden_layers):
        keys |= llama_layer(f"backbone.layers.{i}", bb)
    keys["decoder_connector.first_word_embedding"] = (1, 1, bb.hidden_size)
    for i in range(dec.num_hidden_layers):
        keys |= llama_layer(f"decoder.decoder_layers.{i}.llama_layer", dec)
        keys |= cross(f"decoder.decoder_layers.{i}.cross_attention", dec.cross_attention_config)
        keys[f"decoder.decoder_layers.{i}.query_norm.weight"] = (dec.hidden_size,)
        keys[f"decoder.decoder_layers.{i}.kv_norm.weight"] = (bb.hidden_size,)
    keys["layer_norm.weight"] = (dec.hidden_size,)
    keys["lm_head.weight"] = (256, dec.hidden_size)
    return keys


def test_release_state_dict_loads_with_no_missing_or_unexpected_keys(tmp_path):
    config = HATConfig.tiny()
    torch.manual_seed(1)
    tensors = {k: torch.randn(shape) * 0.05 for k, shape in release_keys(config).items()}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(tmp_path)
    model, info = HATForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    loaded = model.state_dict()
    for key, value in tensors.items():
        assert torch.equal(loaded[f"model.{key}" if key != "lm_head.weight" else key], value), key


def test_save_load_round_trip_keeps_release_names_and_logits(tiny_model, tmp_path):
    ids, mask = encode(TEXTS, "left")
    ref = tiny_model(ids, attention_mask=mask).logits
    tiny_model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        on_disk = set(f.keys())
    assert on_disk == set(release_keys(tiny_model.config))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is HATForCausalLM
    assert torch.equal(loaded(ids, attention_mask=mask).logits, ref)
    assert {n for n, p in loaded.named_parameters() if not p.requires_grad} == {
        n for n, p in tiny_model.named_parameters() if not p.requires_grad
    }


def test_8b_preset_has_the_release_parameter_count():
    with torch.device("meta"):
        model = HATForCausalLM(HATConfig.release_8b())
    assert sum(p.numel() for p in model.parameters()) == 7_192_495_104


# ------------------------------------------------------------------------------------------- Llama parity
def test_backbone_layers_match_llama_layers():
    """The backbone is Llama 3.1's blocks: same weights, same inputs -> same outputs (llama3 RoPE, GQA 4:1)."""
    config = HATConfig.tiny()
    bb = config.backbone_config
    llama_config = LlamaConfig(**{k: v for k, v in bb.to_dict().items() if k not in ("vocab_size",)}, vocab_size=32)
    assert llama_config.rope_parameters["rope_type"] == "llama3" and bb.num_attention_heads // bb.num_key_value_heads == 4
    torch.manual_seed(0)
    llama = LlamaForCausalLM(llama_config).eval()
    model = HATForCausalLM(config).eval()
    for ours, theirs in zip(model.model.backbone.layers, llama.model.layers, strict=True):
        ours.load_state_dict(theirs.state_dict())

    W = 12
    x = torch.randn(2, W, bb.hidden_size)
    expected = llama.model(inputs_embeds=x).last_hidden_state  # Llama's layers + its final norm
    from hat.model.layout import additive_mask, causal_mask

    positions = torch.arange(W).expand(2, W)
    mask = additive_mask(causal_mask(torch.ones(2, W, dtype=torch.bool)), x.dtype)
    got = llama.model.norm(model.model.backbone(x, mask, positions))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


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
    data = b"a\x00b\x01\x1b[0m\r\n\t\xff\xfe\x80abc\xe2\x82 \xc0end"
    ids = torch.tensor([list(data)])
    out = tiny_model(ids, labels=ids)
    assert torch.isfinite(out.loss) and out.logits.shape == (1, len(data), 256)


def test_layout_bookkeeping():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])
    layout = build_layout([[2, 3], [1, 2]], mask)
    assert layout.byte_positions[0].tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert layout.byte_word[0, 2:].tolist() == [0, 0, 1, 1, 1]
    assert layout.word_bytes[0].tolist() == [[2, 3, 0], [4, 5, 6]]
    assert layout.word_bytes_valid[1].tolist() == [[True, False, False], [True, True, False]]
    assert layout.word_valid.tolist() == [[True, True], [True, True]]
