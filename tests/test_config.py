"""hat.config: `config.json` in the release's schema, and bad configs named at construction."""

import json

import pytest
from transformers import AutoConfig

from hat import HATConfig


def test_config_json_is_in_the_release_schema(tmp_path):
    HATConfig.tiny().save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "hierarchical_autoregressive_transformer"
    assert raw["special_token_dict"] == {"<|eot_id|>": 192} and raw["max_word_size"] == 100
    assert raw["backbone_config"]["vocab_size"] == 0
    # What the release's loader passes positionally / requires.
    required = {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                "intermediate_size", "max_position_embeddings", "rope_scaling", "rope_theta", "mlp_bias"}
    cross_keys = {"hidden_size", "hidden_size_q", "hidden_size_kv", "num_attention_heads", "attention_num_kv_heads",
                  "word_window_size", "key_query_norm", "key_query_norm_per_head"}
    for name in ("encoder_config", "backbone_config", "decoder_config"):
        assert required <= set(raw[name]), name
    for name in ("encoder_config", "decoder_config"):
        assert set(raw[name]["cross_attention_config"]) == cross_keys
        assert raw[name]["vocab_size"] == 256
    assert raw["decoder_config"]["cross_attn_every_layer"] is True
    assert raw["backbone_config"]["rope_scaling"]["rope_type"] == "llama3"


def test_release_config_dict_reads_unchanged():
    """A config.json as the release writes it (transformers 4.46 era fields, vLLM extras) loads as is."""
    raw = HATConfig.tiny().to_dict()
    raw |= {"architectures": ["HATDecoderForCausalLM"], "torch_dtype": "bfloat16", "transformers_version": "4.46.3",
            "auto_map": {"AutoConfig": "config.HATArchitectureConfig", "AutoModelForCausalLM": "model.HATForCausalLM"}}
    raw["encoder_config"]["rope_scaling"] = None
    config = AutoConfig.for_model(**raw)
    assert isinstance(config, HATConfig)
    assert config.encoder_config.rope_parameters["rope_type"] == "default"
    assert config.backbone_config.rope_parameters["rope_type"] == "llama3"
    assert config.decoder_config.cross_attention_config.hidden_size_kv == config.backbone_config.hidden_size


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["decoder_config"]["cross_attention_config"].update(hidden_size_kv=7), "hidden_size_kv"),
        (lambda d: d["encoder_config"].update(vocab_size=300), "vocab_size"),
        (lambda d: d["backbone_config"].update(num_key_value_heads=3), "num_key_value_heads"),
        (lambda d: d.update(special_token_dict={"<|eot_id|>": 65}), "never occurs in UTF-8"),
        (lambda d: d.update(special_token_dict={"<a>": 250, "<b>": 250}), "both use byte 250"),
        (lambda d: d.update(max_word_size=0), "max_word_size"),
        (lambda d: d["decoder_config"]["cross_attention_config"].update(foo=1), "unknown keys"),
    ],
)
def test_invalid_config_raises_naming_the_value(change, message):
    raw = HATConfig.tiny().to_dict()
    change(raw)
    with pytest.raises(ValueError, match=message):
        HATConfig(**{k: v for k, v in raw.items() if k != "model_type"})
