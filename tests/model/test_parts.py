"""hat.model.parts: the table of the model's parts, and the output-inert decoder weights, frozen by construction."""

import torch

from conftest import encode
from hat import HATConfig, HATForCausalLM
from hat.model.parts import INERT_PARAMETERS, disk_name, is_inert, memory_name


def inert_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if is_inert(n)}


def test_inert_parameters_are_frozen_and_get_no_gradient(tiny_model):
    frozen = {n for n, p in tiny_model.named_parameters() if not p.requires_grad}
    assert frozen == inert_names(tiny_model) and frozen
    assert {n.split("decoder_layers.")[1].split(".", 1)[1] for n in frozen} <= set(INERT_PARAMETERS)
    # Changing them does not change the output: each byte attends to exactly one key.
    ids, _ = encode(["inert weights"])
    ref = tiny_model(ids).logits
    with torch.no_grad():
        for n, p in tiny_model.named_parameters():
            if n in frozen:
                p.add_(torch.randn_like(p))
    torch.testing.assert_close(tiny_model(ids).logits, ref)
    # A backward pass reaches every other parameter and none of them, even unfrozen: they are not in the graph.
    tiny_model.train()
    tiny_model(ids, labels=ids).loss.backward()
    for n, p in tiny_model.named_parameters():
        assert (p.grad is None) == (n in frozen), n
    tiny_model.zero_grad(set_to_none=True)
    for n in frozen:
        tiny_model.get_parameter(n).requires_grad_(True)
    tiny_model(ids, labels=ids).loss.backward()
    assert all(tiny_model.get_parameter(n).grad is None for n in frozen)


def test_inert_parameters_stay_frozen_when_replaced(tiny_model, tmp_path):
    """Loading assigns new `Parameter`s: the inert ones are frozen as they are set (no freezing after the fact)."""
    tiny_model.save_pretrained(tmp_path)
    loaded = HATForCausalLM.from_pretrained(tmp_path)
    assert {n for n, p in loaded.named_parameters() if not p.requires_grad} == inert_names(loaded)
    fresh = HATForCausalLM(HATConfig.tiny())
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    fresh.load_state_dict(state, assign=True)
    assert {n for n, p in fresh.named_parameters() if not p.requires_grad} == inert_names(fresh)
    assert all(p.requires_grad for n, p in fresh.named_parameters() if not is_inert(n))


def test_disk_and_memory_names_are_inverse():
    for memory, disk in [("model.encoder.layers.0.mlp.up_proj.weight", "encoder.layers.0.mlp.up_proj.weight"),
                         ("model.decoder_connector.first_word_embedding", "decoder_connector.first_word_embedding"),
                         ("model.decoder.decoder_layers.1.kv_norm.weight", "decoder.decoder_layers.1.kv_norm.weight"),
                         ("lm_head.weight", "lm_head.weight")]:
        assert disk_name(memory) == disk and memory_name(disk) == memory


def test_nonfinite_count_counts_across_chunks():
    from hat.model.parts import nonfinite_count

    x = torch.zeros(10, 7)
    assert nonfinite_count(x, chunk=8) == 0
    x[0, 0], x[5, 3], x[9, 6] = float("nan"), float("inf"), -float("inf")
    assert nonfinite_count(x, chunk=8) == nonfinite_count(x) == 3
    assert nonfinite_count(x.to(torch.bfloat16), chunk=3) == 3


def test_check_finite_names_the_first_bad_weight_by_its_disk_name(tiny_model):
    import pytest

    from hat.model.parts import check_finite

    check_finite(tiny_model)
    with torch.no_grad():
        tiny_model.lm_head.weight[3, :2] = float("inf")
        tiny_model.model.backbone.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    n = tiny_model.model.backbone.layers[1].mlp.up_proj.weight.numel()
    with pytest.raises(ValueError, match=rf"^weight 'backbone.layers.1.mlp.up_proj.weight' has 1 NaN or infinite values "
                                         rf"of {n:,} \(float32\): the checkpoint is damaged, or training diverged$"):
        check_finite(tiny_model)
