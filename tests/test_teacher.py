"""hat.teacher: the source Llama's embedding, norm and head, run through the HAT's own backbone."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hat.convert.in_memory import hat_from_llama
from hat.teacher import HATTeacher


def tiny_llama(tie: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=tie,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    )
    llama = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so that a missing or misplaced norm shows
        for p in llama.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return llama


@pytest.mark.parametrize("tie", [False, True])
def test_teacher_pass_is_the_source_llama(tie):
    llama = tiny_llama(tie)
    hat = hat_from_llama(llama, hidden_size=32, num_heads=2)
    teacher = HATTeacher.from_llama(llama)
    ids = torch.randint(0, 300, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    ref = llama(ids, attention_mask=mask, output_hidden_states=True)
    out = teacher(hat, ids, mask, layer=2)
    for b, n in enumerate(mask.sum(1).tolist()):
        torch.testing.assert_close(out.logits[b, :n], ref.logits[b, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.layer_hidden_state[b, :n], ref.hidden_states[2][b, :n], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(teacher(hat, ids, mask).logits, out.logits)  # with or without the layer split


def test_teacher_files_round_trip_and_bad_folders_are_named(tmp_path):
    llama = tiny_llama(False)
    teacher = HATTeacher.from_llama(llama, source="tiny")
    teacher.save_pretrained(tmp_path / "teacher")
    loaded = HATTeacher.from_pretrained(tmp_path)  # the HAT checkpoint dir that holds teacher/
    assert loaded.source == "tiny" and not loaded.tie_word_embeddings
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert all(not p.requires_grad for p in loaded.parameters())
    with pytest.raises(FileNotFoundError, match="--no-teacher"):
        HATTeacher.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "teacher" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a hat-teacher v1 config"):
        HATTeacher.from_pretrained(tmp_path)


def test_teacher_refuses_tensors_that_do_not_fit():
    teacher = HATTeacher(10, 8, 1e-5, tie_word_embeddings=False)
    good = {"embed_tokens.weight": torch.zeros(10, 8), "norm.weight": torch.ones(8), "lm_head.weight": torch.zeros(10, 8)}
    with pytest.raises(ValueError, match=r"missing: \['lm_head.weight'\]"):
        teacher.load_tensors({k: v for k, v in good.items() if k != "lm_head.weight"})
    with pytest.raises(ValueError, match=r"norm.weight: shape \(7,\), expected \(8,\)"):
        teacher.load_tensors({**good, "norm.weight": torch.ones(7)})
