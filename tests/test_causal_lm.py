"""hat.causal_lm: `HATForCausalLM` on CPU at tiny size: the loss, TRL's fused head, training steps, checkpoints in
the release's layout."""

import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from conftest import encode
from hat import HATConfig, HATForCausalLM
from hat.model.parts import disk_name

TEXTS = [
    "Hello, world! HAT models read bytes.",
    "Straße über 3.14159 und 1,000 Äpfel",
    "emoji 👨‍👩‍👧 and 漢字 too",
]


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


# ----------------------------------------------------------------------------------------------- strict loading
def saved_without(tmp_path, tiny_model, drop=(), add=None):
    """`tiny_model` saved to tmp_path with the on-disk tensors `drop` removed and `add` added."""
    from safetensors.torch import load_file

    tiny_model.save_pretrained(tmp_path)
    tensors = {k: v for k, v in load_file(str(tmp_path / "model.safetensors")).items() if k not in drop}
    save_file({**tensors, **(add or {})}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize("drop", [
    ["lm_head.weight"],
    ["encoder_connector.latent_query"],
    ["backbone.layers.0.mlp.up_proj.weight", "backbone.layers.1.self_attn.k_proj.weight"],
    ["encoder.layers.0.input_layernorm.weight"],
    ["decoder.decoder_layers.0.cross_attention.v_proj.weight", "decoder_connector.first_word_embedding"],
    ["decoder.decoder_layers.0.query_norm.weight"],  # output-inert, but part of the release's layout
])  # fmt: skip
def test_a_checkpoint_missing_a_tensor_is_an_error_naming_it(tiny_model, tmp_path, drop):
    path = saved_without(tmp_path, tiny_model, drop)
    with pytest.raises(ValueError, match=re.escape(f"lacks {len(drop)} tensor(s) of the model, which would be randomly "
                                                   f"initialised: {sorted(drop)}")):
        AutoModelForCausalLM.from_pretrained(path)
    # The opt-in for a deliberate partial load: transformers' behaviour, the missing tensors reported
    model, info = HATForCausalLM.from_pretrained(path, strict=False, output_loading_info=True)
    assert {disk_name(k) for k in info["missing_keys"]} == set(drop)
    assert torch.isfinite(model(encode(TEXTS[:1])[0]).logits).all()


def test_unexpected_tensors_are_an_error_naming_them(tiny_model, tmp_path):
    path = saved_without(tmp_path, tiny_model, add={"extra.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=re.escape("has 1 tensor(s) the model does not, which would be dropped: "
                                                   "['extra.weight']")):
        HATForCausalLM.from_pretrained(path)
    # A config with fewer backbone layers than the weights: the layers it lacks would be dropped
    config = HATConfig.from_pretrained(path)
    config.backbone_config.num_hidden_layers -= 1
    last = config.backbone_config.num_hidden_layers
    with pytest.raises(ValueError, match=rf"\['backbone\.layers\.{last}\.input_layernorm\.weight', .*\(10 in all\)"):
        HATForCausalLM.from_pretrained(path, config=config)
    model = HATForCausalLM.from_pretrained(path, config=config, strict=False)
    assert len(model.model.backbone.layers) == last


def test_a_complete_checkpoint_loads_strictly_with_its_loading_info(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), HATForCausalLM)


def test_a_lora_adapter_directory_loads_strictly(tiny_model, tmp_path):
    """transformers loads an adapter directory as its base checkpoint plus the adapter: both complete, no error."""
    from peft import LoraConfig, get_peft_model

    from hat.model.parts import BACKBONE_LORA_TARGETS

    tiny_model.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(HATForCausalLM.from_pretrained(tmp_path / "base"),
                                LoraConfig(target_modules=BACKBONE_LORA_TARGETS, r=2))  # fmt: skip
    peft_model.save_pretrained(tmp_path / "adapter")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "adapter")
    assert isinstance(model, HATForCausalLM) and "default" in model.peft_config


def test_hidden_states_are_the_decoders_byte_states_per_layer(tiny_model):
    """`output_hidden_states=True`: the decoder's input (the encoder's byte states), each decoder layer's output, the
    last after the final norm (the head's input); None otherwise."""
    ids, mask = encode(TEXTS, "left")
    out = tiny_model(ids, attention_mask=mask, output_hidden_states=True)
    layers, E = tiny_model.config.decoder_config.num_hidden_layers, tiny_model.config.decoder_config.hidden_size
    assert len(out.hidden_states) == layers + 1
    assert all(h.shape == (*ids.shape, E) for h in out.hidden_states)
    base = tiny_model.model(ids, attention_mask=mask)
    torch.testing.assert_close(out.hidden_states[0], base.encoder_hidden_state)
    torch.testing.assert_close(tiny_model.lm_head(out.hidden_states[-1]), out.logits)
    assert not torch.allclose(out.hidden_states[1], out.hidden_states[0])
    assert tiny_model(ids, attention_mask=mask).hidden_states is None
    # the layer outputs are what the decoder's layers return, recorded while they run
    seen = []
    hook = tiny_model.model.decoder.decoder_layers[0].llama_layer.register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        tiny_model(ids, attention_mask=mask)
    finally:
        hook.remove()
    torch.testing.assert_close(out.hidden_states[1], seen[0])
    with pytest.raises(ValueError, match="attention weights"):
        tiny_model(ids, output_attentions=True)
