"""hat.eval.loading: a missing checkpoint is named before anything loads; a weight that is not finite is named."""

from __future__ import annotations

import pytest

from hat.eval.harness import HATLM


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HATLM(pretrained=str(tmp_path / "nowhere"))


def test_a_weight_that_is_not_finite_is_named_unless_the_check_is_off(tiny_model, tmp_path):
    import torch

    from hat.eval.loading import load_hat
    from hat.eval.report import parse_args

    with torch.no_grad():
        tiny_model.model.encoder.embedding_layer.weight[65, :3] = float("nan")
    tiny_model.save_pretrained(tmp_path)
    n = tiny_model.model.encoder.embedding_layer.weight.numel()
    message = (rf"^{tmp_path}: weight 'encoder.embedding_layer.weight' has 3 NaN or infinite values of {n:,} "
               r"\(float32\): .* \(skip this check with --no-check-finite, or check_finite=False\)$")
    with pytest.raises(ValueError, match=message):
        load_hat(tmp_path, "cpu")
    with pytest.raises(ValueError, match=message):
        HATLM(pretrained=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="^HATForCausalLM: weight 'encoder.embedding_layer.weight'"):
        HATLM(pretrained=tiny_model, device="cpu")  # a loaded model is checked too
    assert load_hat(tmp_path, "cpu", check_finite=False).model.encoder.embedding_layer.weight.isnan().sum() == 3
    HATLM(pretrained=str(tmp_path), device="cpu", check_finite=False)
    # The report's switch (on by default, as in convert-llama)
    common = ["--hat", "h", "--llama", "l", "--texts", "t"]
    assert parse_args(common).check_finite and not parse_args([*common, "--no-check-finite"]).check_finite
