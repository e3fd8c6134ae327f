"""hat.config: the release's config.json schema, derived and checked fields, refused release options.

    python -m pytest tests/test_config.py -q
"""

import json
import re

import pytest
import torch
from transformers import AutoConfig, TrainingArguments

from hat import HATConfig, HATForCausalLM
from hat.config import release_sub_configs


def raw_tiny() -> dict:
    """`HATConfig.tiny()` as the dict a config.json holds (less `model_type`, which `AutoConfig` consumes)."""
    return {k: v for k, v in HATConfig.tiny().to_dict().items() if k != "model_type"}


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



def drop(d: dict, key: str) -> None:
    del d[key]


@pytest.mark.parametrize(
    "change, message",
    [
        # fields written twice: the top-level window is the encoder's and decoder's
        (lambda d: d.update(sliding_window=4), r"sliding_window \(4\) must equal encoder_config.sliding_window and "
                                               r"decoder_config.sliding_window \(16\)"),
        (lambda d: d["decoder_config"].update(sliding_window=32),
         r"encoder_config.sliding_window \(16\) and decoder_config.sliding_window \(32\) must be equal"),
        (lambda d: d["backbone_config"].update(sliding_window=8), r"backbone_config.sliding_window is 8"),
        # release options that are not implemented
        (lambda d: d["encoder_config"].update(key_query_norm=True), r"encoder_config.key_query_norm is True: QK-norm"),
        (lambda d: d["backbone_config"].update(key_query_norm=True), r"backbone_config.key_query_norm is True"),
        (lambda d: d["decoder_config"].update(key_query_norm=True), r"decoder_config.key_query_norm is True"),
        (lambda d: d["encoder_config"].update(is_neox_style=False), r"encoder_config.is_neox_style is False"),
        (lambda d: d["backbone_config"].update(is_neox_style=False), r"backbone_config.is_neox_style is False"),
        (lambda d: d["encoder_config"]["cross_attention_config"].update(word_window_size=2),
         r"encoder_config.cross_attention_config.word_window_size is 2: only 1"),
        (lambda d: d["decoder_config"]["cross_attention_config"].update(word_window_size=0),
         r"decoder_config.cross_attention_config.word_window_size is 0"),
        # partial configs and sizes that cannot build a model
        (lambda d: drop(d, "decoder_config"), r"\['decoder_config'\] missing"),
        (lambda d: drop(d["encoder_config"], "hidden_size"), r"encoder_config has no hidden_size"),
        (lambda d: d["backbone_config"].update(num_attention_heads=0), r"backbone_config.num_attention_heads must be an int >= 1, got 0"),
        (lambda d: d["backbone_config"].update(num_hidden_layers=-2), r"backbone_config.num_hidden_layers must be an int >= 1, got -2"),
        (lambda d: d["decoder_config"].update(head_dim=0), r"decoder_config.head_dim must be an int >= 1, got 0"),
        (lambda d: d["encoder_config"]["cross_attention_config"].update(num_attention_heads=0),
         r"encoder_config.cross_attention_config.num_attention_heads must be an int >= 1, got 0"),
        (lambda d: d["backbone_config"].update(vocab_size=5), r"backbone_config.vocab_size must be 0"),
        (lambda d: d.update(max_position_embeddings=0), r"max_position_embeddings must be an int >= 1, got 0"),
        # token ids and the special-token rule (the rule itself: tests/test_special_tokens.py)
        (lambda d: d.update(special_token_dict={"<|pad|>": 245}), re.escape("must contain '<|eot_id|>'")),
        (lambda d: d.update(eos_token_id=65), r"eos_token_id \(65\) must be the byte value\(s\) of special tokens"),
        (lambda d: d.update(pad_token_id=300), r"pad_token_id must be a byte value \(0-255\) or None, got 300"),
        (lambda d: d.update(sliding_window_extra_key=1), r"sliding_window_extra_key must be true or false, got 1"),
        # the derived sizes, if given, agree
        (lambda d: d.update(vocab_size=300), r"vocab_size \(300\) must be 256"),
        (lambda d: d.update(hidden_size=32), r"hidden_size \(32\) must be 64, backbone_config.hidden_size"),
        (lambda d: d.update(num_hidden_layers=7), r"num_hidden_layers \(7\) must be 2, backbone_config.num_hidden_layers"),
    ],
)
def test_inconsistent_or_unsupported_config_raises_naming_the_values(change, message):
    raw = raw_tiny()
    change(raw)
    with pytest.raises(ValueError, match=message):
        HATConfig(**raw)


def test_sliding_window_is_derived_and_written_as_the_sub_configs_say(tmp_path):
    subs = release_sub_configs(HATConfig.tiny().to_dict()["backbone_config"], hidden_size=32, num_heads=2,
                               intermediate_size=64, sliding_window=40)
    config = HATConfig(**subs)  # no top-level sliding_window given
    assert config.sliding_window == config.encoder_config.sliding_window == config.decoder_config.sliding_window == 40
    assert HATConfig(**subs, sliding_window=40).sliding_window == 40  # given and equal: accepted
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["sliding_window"] == raw["encoder_config"]["sliding_window"] == raw["decoder_config"]["sliding_window"] == 40
    assert HATConfig.from_pretrained(tmp_path).sliding_window == 40
    # Changed in place, the config no longer agrees with itself: saving refuses.
    config.decoder_config.sliding_window = 8
    with pytest.raises(ValueError, match=r"encoder_config.sliding_window \(40\) and decoder_config.sliding_window \(8\)"):
        config.save_pretrained(tmp_path / "again")
    assert not (tmp_path / "again" / "config.json").exists()


def test_sliding_window_extra_key_is_written_only_when_set(tmp_path):
    """The window convention (ARCHITECTURE.md §3.2): W keys by default, and config.json keeps the release's keys."""
    HATConfig.tiny().save_pretrained(tmp_path / "default")
    assert "sliding_window_extra_key" not in json.loads((tmp_path / "default" / "config.json").read_text())
    assert HATConfig.from_pretrained(tmp_path / "default").sliding_window_extra_key is False
    HATConfig.tiny(sliding_window_extra_key=True).save_pretrained(tmp_path / "extra")
    assert json.loads((tmp_path / "extra" / "config.json").read_text())["sliding_window_extra_key"] is True
    assert HATConfig.from_pretrained(tmp_path / "extra").sliding_window_extra_key is True


def test_auto_map_names_our_code_files_also_for_a_release_config(tmp_path):
    """A config read with the release's auto_map (its config.py / model.py) is saved with ours, and the files."""
    raw = HATConfig.tiny().to_dict() | {"auto_map": {"AutoConfig": "config.HATArchitectureConfig"}}
    config = HATConfig(**raw)
    assert config.auto_map == {"AutoConfig": "configuration_hat.HATConfig", "AutoModel": "modeling_hat.HATModel",
                               "AutoModelForCausalLM": "modeling_hat.HATForCausalLM"}
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == config.auto_map
    assert {"configuration_hat.py", "modeling_hat.py", "tokenization_hat.py"} <= {p.name for p in tmp_path.iterdir()}


def test_release_options_that_are_implemented_or_inert_round_trip(tmp_path):
    raw = raw_tiny()
    raw["encoder_config"]["cross_attention_config"].update(key_query_norm=True, key_query_norm_per_head=True)
    raw["decoder_config"]["cross_attention_config"].update(key_query_norm=True)
    raw["backbone_config"].update(key_query_norm_per_head=True, is_neox_style=True)  # per-head alone: no norm to apply
    raw["decoder_config"]["cross_attn_every_layer"] = False
    config = HATConfig(**raw)
    model = HATForCausalLM(config)
    names = {n for n, _ in model.named_parameters()}
    assert "model.encoder_connector.cross_attention_encoder_connector.norm_query.weight" in names
    assert model.model.encoder_connector.cross_attention_encoder_connector.norm_query.weight.shape == (
        config.encoder_config.cross_attention_config.head_dim,)  # per head
    assert not any("decoder.decoder_layers.1.cross_attention" in n for n in names)  # cross-attention in layer 0 only
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["encoder_config"]["cross_attention_config"]["key_query_norm_per_head"] is True
    assert written["backbone_config"]["key_query_norm_per_head"] is True
    assert written["backbone_config"]["key_query_norm"] is False
    assert all(written[name]["is_neox_style"] is True for name in ("encoder_config", "backbone_config", "decoder_config"))
    assert written["decoder_config"]["cross_attn_every_layer"] is False
    assert HATConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


def test_no_sub_configs_is_the_tiny_preset_and_a_partial_set_is_refused():
    assert HATConfig().to_dict() == HATConfig.tiny().to_dict()
    backbone = HATConfig.tiny().to_dict()["backbone_config"]
    with pytest.raises(ValueError, match=r"\['encoder_config', 'decoder_config'\] missing"):
        HATConfig(backbone_config=backbone)


def test_sizes_for_transformers_utilities(tmp_path):
    """`vocab_size`, `hidden_size`, `num_hidden_layers` as transformers reads them; config.json keeps the release's
    keys (none of the three at the top level), and a config.json that has them (agreeing) loads."""
    config = HATConfig.release_8b()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (256, 4096, 32)
    assert config.get_text_config() is config and config.get_text_config().vocab_size == 256
    assert not {"vocab_size", "hidden_size", "num_hidden_layers"} & set(config.to_dict())
    assert HATConfig(**raw_tiny(), vocab_size=256, hidden_size=64, num_hidden_layers=2).hidden_size == 64


def test_compute_transition_scores_reads_the_byte_vocabulary(tiny_model):
    torch.manual_seed(0)
    steps = [torch.randn(2, 256) for _ in range(3)]
    sequences = torch.tensor([[72, 105, 33, 10, 65], [72, 105, 104, 32, 192]])  # 2 prompt bytes, 3 new ones
    scores = tiny_model.compute_transition_scores(sequences, tuple(steps), normalize_logits=True)
    expected = torch.stack([s.log_softmax(-1).gather(1, sequences[:, 2 + i, None])[:, 0] for i, s in enumerate(steps)], 1)
    torch.testing.assert_close(scores, expected)


def test_deepspeed_auto_bucket_sizes_use_the_backbone_width(tmp_path):
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    ds = HfTrainerDeepSpeedConfig({"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
                                                          "stage3_prefetch_bucket_size": "auto",
                                                          "stage3_param_persistence_threshold": "auto"}})
    model = HATForCausalLM(HATConfig.tiny())
    ds.trainer_config_finalize(TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]), model, 10)
    zero = ds.config["zero_optimization"]
    assert (zero["reduce_bucket_size"], zero["stage3_param_persistence_threshold"]) == (64 * 64, 10 * 64)


def test_release_sub_configs_refuses_sizes_that_cannot_build():
    backbone = HATConfig.tiny().to_dict()["backbone_config"]
    with pytest.raises(ValueError, match=r"num_heads must be an int >= 1, got 0"):
        release_sub_configs(backbone, num_heads=0)
    with pytest.raises(ValueError, match=r"sliding_window must be an int >= 1, got -5"):
        release_sub_configs(backbone, sliding_window=-5)
