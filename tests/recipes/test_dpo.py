"""recipes/dpo.py at tiny size: the reference model (a copy, the adapter-disabled policy, or precomputed
log-probs), overlong pairs counted, padding-free batches refused."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from tests.helpers.recipes import DATA, assert_reloads, changed, is_inert, losses, run_recipe, weights


def test_dpo_full_reference_stays_and_overlong_pairs_are_counted(tiny_hat, tmp_path, caplog):
    """Without LoRA the reference is a second copy of the checkpoint; training leaves it as it was. With max_length
    140 bytes, pairs whose prompt alone fills it are dropped and longer ones are cut; both counts are logged."""
    from transformers import AutoModelForCausalLM

    from hat.recipes.data import DataSource, load_mixture, preference_as_chat

    caplog.set_level(logging.WARNING)
    out = tmp_path / "dpo"
    trainer = run_recipe("dpo", tiny_hat, out, "--max_length", "140")
    steps = losses(trainer.state.log_history)
    assert sorted(steps) == [1, 2, 3] and all(math.isfinite(v) for v in steps.values())
    assert steps[1] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the start

    initial = AutoModelForCausalLM.from_pretrained(tiny_hat).state_dict()
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    for name, tensor in trainer.ref_model.state_dict().items():
        assert torch.equal(tensor, initial[name]), name
    moved = changed(weights(tiny_hat), weights(out))
    assert sum(moved.values()) > len(moved) // 2
    assert not any(v for k, v in moved.items() if is_inert(k))
    assert_reloads(out)

    sources = [DataSource("json", data_files=str(DATA / f"pref_{lang}.jsonl"), probability=0.5) for lang in ("en", "de")]
    mixture = load_mixture(sources, columns=("chosen", "rejected"), optional_columns=("prompt",), transform=preference_as_chat)
    prepared = trainer.train_dataset
    dropped = len(mixture) - len(prepared)
    cut = sum(len(p) + max(len(c), len(r)) > 140 for p, c, r in
              zip(prepared["prompt_ids"], prepared["chosen_ids"], prepared["rejected_ids"]))  # fmt: skip
    assert dropped > 0 and cut > 0 and all(len(p) < 140 for p in prepared["prompt_ids"])
    warning = [r.getMessage() for r in caplog.records if "pairs are longer than max_length" in r.getMessage()]
    assert warning and f"{cut} of {len(prepared)} pairs" in warning[0] and f"{dropped} pairs dropped" in warning[0]


def test_dpo_lora_reference_is_the_adapter_disabled_model(tiny_hat, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dpo-lora"
    trainer = run_recipe("dpo", tiny_hat, out, "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
                         "--learning_rate", "1e-2", "--max_steps", "2")  # fmt: skip
    assert trainer.ref_model is None
    model = trainer.model.eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_hat).eval()
    ids = torch.tensor([list("Was ist die Hauptstadt von Italien? Rom.".encode())])
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, plain(ids).logits)
    assert not torch.allclose(trained, plain(ids).logits)


def test_dpo_precomputed_reference_log_probs(tiny_hat, tmp_path):
    """`precompute_ref_log_probs: true`: no reference model is kept; its log-probs are computed once, up front."""
    trainer = run_recipe("dpo", tiny_hat, tmp_path / "out", "--precompute_ref_log_probs", "true", "--max_steps", "2")
    assert trainer.ref_model is None
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    steps = losses(trainer.state.log_history)
    assert steps[1] == pytest.approx(math.log(2), abs=1e-4) and math.isfinite(steps[2])


def test_packed_batches_are_refused(tiny_hat, tmp_path):
    with pytest.raises(ValueError, match="padding-free"):
        run_recipe("dpo", tiny_hat, tmp_path / "out", "--padding_free", "true")
