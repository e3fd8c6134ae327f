"""recipes/pretrain.py at tiny size: frozen backbone, then unfrozen; resume; streaming; word lengths from the
collator."""

from __future__ import annotations

import math

import pytest
import torch

from hat.collator import HATDataCollator
from tests.helpers.recipes import DATA, TINY, assert_reloads, changed, is_inert, losses, run_recipe, weights, write_yaml
from tests.helpers.splitting import splitter_calls


def test_pretrain_freezes_backbone_then_unfreezes_and_resumes(tiny_hat, tmp_path):
    """4 steps, backbone frozen (lr 0) for 2, checkpoints at 2 and 4; then a run resumed from checkpoint 2."""
    run = tmp_path / "run"
    with splitter_calls() as calls:
        trainer = run_recipe("pretrain", tiny_hat, run)
    assert calls == []  # every training step got its word lengths from the collator
    assert isinstance(trainer.data_collator, HATDataCollator)
    first = losses(trainer.state.log_history)
    assert sorted(first) == [1, 2, 3, 4] and all(math.isfinite(v) for v in first.values())

    initial, step2, step4 = weights(tiny_hat), weights(run / "checkpoint-2"), weights(run / "checkpoint-4")
    # Frozen phase: AdamW with lr 0 leaves the backbone bit for bit (weight decay included)
    assert not any(changed(initial, step2, "backbone.").values())
    new_parts = {k: v for k, v in changed(initial, step2).items() if not k.startswith("backbone.")}
    assert all(v for k, v in new_parts.items() if not is_inert(k)), [k for k, v in new_parts.items() if not v]
    assert not any(v for k, v in new_parts.items() if is_inert(k))
    # Unfrozen: every backbone tensor moves
    assert all(changed(step2, step4, "backbone.").values())
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert lrs[0] == 0 and lrs[1] == pytest.approx(1e-3)  # warmup 1 step, then the peak; cosine to 10% after
    groups = trainer.optimizer.param_groups
    assert [g["backbone"] for g in groups] == [False, False, True, True]
    assert groups[2]["lr"] == groups[3]["lr"] == pytest.approx(0.1 * groups[0]["lr"])  # backbone_lr_ratio x lr

    # The final save is a HAT checkpoint with release key names that loads with the Auto classes
    assert weights(run).keys() == initial.keys()
    assert_reloads(run)

    # A run stopped after checkpoint 2 and resumed from it continues the same loss curve to the same weights
    resumed = tmp_path / "resumed"
    trainer = run_recipe("pretrain", tiny_hat, resumed, "--resume_from_checkpoint", str(run / "checkpoint-2"))
    again = losses(trainer.state.log_history)  # steps 1-2 come from the checkpoint's trainer state
    assert sorted(again) == [1, 2, 3, 4] and trainer.state.global_step == 4
    for step in (3, 4):
        assert again[step] == pytest.approx(first[step], rel=1e-5)
    for name, tensor in weights(resumed).items():
        torch.testing.assert_close(tensor, step4[name], rtol=1e-5, atol=1e-6)


def test_collated_batches_give_the_models_own_loss(tiny_hat, tmp_path):
    """The first training batch, scored with the collator's word lengths and with the model's own splitting: the
    same loss, so the collator changes where words are found, not which."""
    from transformers import AutoModelForCausalLM

    trainer = run_recipe("pretrain", tiny_hat, tmp_path / "out", "--max_steps", "1", "--save_strategy", "no")
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["word_lengths"].shape[0] == batch["input_ids"].shape[0]
    model = AutoModelForCausalLM.from_pretrained(tiny_hat).eval()
    without = {k: v for k, v in batch.items() if k != "word_lengths"}
    with torch.no_grad(), splitter_calls() as calls:
        given = model(**batch).loss
    assert calls == []
    with torch.no_grad():
        torch.testing.assert_close(given, model(**without).loss, rtol=0, atol=0)


def test_pretrain_streams_text_and_evaluates(tiny_hat, tmp_path):
    """The streaming path of the Hub recipes (IterableDataset, shuffle buffer, per-process shards), on local text."""
    import datasets

    config = write_yaml(
        TINY / "pretrain.yaml", tmp_path / "recipe.yaml", streaming=True, max_steps=2, save_strategy="no",
        eval_datasets=[{"path": "text", "data_files": str(DATA / "de.txt")}], eval_strategy="steps", eval_steps=2,
    )  # fmt: skip
    with splitter_calls() as calls:
        trainer = run_recipe("pretrain", tiny_hat, tmp_path / "out", config=config)
    assert calls == []  # training and evaluation batches both carry word lengths
    assert isinstance(trainer.train_dataset, datasets.IterableDataset)
    assert sorted(losses(trainer.state.log_history)) == [1, 2]
    eval_losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert len(eval_losses) == 1 and math.isfinite(eval_losses[0])


def test_pretrain_refuses_lora(tiny_hat, tmp_path):
    with pytest.raises(ValueError, match="LoRA"):
        run_recipe("pretrain", tiny_hat, tmp_path / "out", "--use_peft", "true")
