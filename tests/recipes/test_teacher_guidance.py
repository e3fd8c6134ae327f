"""Teacher-guided stage 1 (recipes/teacher_guidance.py, recipes/pretrain.py with `teacher: true`)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.recipes import TINY, changed, is_inert, losses, run_recipe, weights

CONFIG = TINY / "pretrain_teacher.yaml"


def test_recipe_trains_the_new_parts_and_leaves_the_backbone_bit_identical(tiny_hat_teacher, tmp_path):
    trainer = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", config=CONFIG)
    logged = [e for e in trainer.state.log_history if "loss" in e and "encoder_loss" in e]
    assert [e["own_fraction"] for e in logged] == [0.0, 0.5, 1.0, 1.0]  # oracle 1 step, handoff over 2
    for entry in logged:
        assert all(math.isfinite(entry[k]) for k in ("loss", "encoder_loss", "byte_ce", "distill_loss"))
    # The backbone is frozen for the whole run: no optimizer state, no weight gradients, not a bit changed
    model = trainer.model
    backbone = [p for n, p in model.named_parameters() if n.startswith("model.backbone.")]
    assert backbone and all(not p.requires_grad and p.grad is None for p in backbone)
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in backbone)
    before, after = weights(tiny_hat_teacher), weights(tmp_path / "out")
    assert not any(changed(before, after, "backbone.").values())
    new = {k: v for k, v in changed(before, after).items() if not k.startswith("backbone.") and not is_inert(k)}
    assert new and all(new.values())
    assert (tmp_path / "out" / "teacher" / "config.json").is_file()  # the teacher travels with the checkpoint
    # Resumed from checkpoint 2 (step 3 and 4 in the handed-off phase): the same losses
    resumed = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "resumed", "--resume_from_checkpoint",
                         str(tmp_path / "out" / "checkpoint-2"), config=CONFIG)
    first, again = losses(trainer.state.log_history), losses(resumed.state.log_history)
    assert all(again[s] == pytest.approx(first[s], rel=1e-5) for s in (3, 4))


def test_decoder_conditioning_moves_from_the_teacher_to_the_backbone(tiny_hat_teacher, tmp_path):
    """own_fraction 0: the decoder reads the teacher's last-block states; 1: the HAT's backbone; between: the mix."""
    trainer = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", "--max_steps", "1", "--save_strategy", "no",
                         config=CONFIG)
    model, guidance = trainer.model.eval(), trainer.guidance
    batch = trainer.data_collator([{"input_ids": list(b"Hello world. Guten Morgen!")}, {"input_ids": list(b"Hi.")}])
    hat = model.model
    seen = []
    original = hat.predict_words
    hat.predict_words = lambda states: seen.append(states) or original(states)
    try:
        for step in (0, 1, 2):  # oracle_steps 1, handoff_steps 2: own fraction 0, 0.5, 1
            guidance.loss(model, dict(batch), step)
    finally:
        hat.predict_words = original
    layout = hat.layout(batch["input_ids"], batch["attention_mask"], batch["word_lengths"])
    own = hat.run_backbone(hat.pool(hat.encode(batch["input_ids"], layout.byte_mask(64, torch.float32),
                                               layout.byte_positions),
                                    layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                                    layout.word_positions), layout.word_mask(torch.float32), layout.word_positions)
    states = guidance.teacher(model, batch["teacher_input_ids"], batch["teacher_attention_mask"]).last_hidden_state
    aligned = (batch["word_token"] >= 0) & layout.word_valid
    rows = torch.arange(2)[:, None]
    teacher_words = states[rows, batch["word_token"].clamp(min=0)]
    torch.testing.assert_close(seen[0][aligned], teacher_words[aligned])
    torch.testing.assert_close(seen[1][aligned], 0.5 * own[aligned] + 0.5 * teacher_words[aligned])
    torch.testing.assert_close(seen[2], own)


def test_after_teacher_steps_the_loss_is_plain_byte_cross_entropy(tiny_hat_teacher, tmp_path):
    trainer = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", "--teacher_steps", "2",
                         "--save_strategy", "no", config=CONFIG)
    logged = [e for e in trainer.state.log_history if "loss" in e and "step" in e and "train_runtime" not in e]
    assert [("encoder_loss" in e) for e in logged] == [True, True, False, False]


def test_a_checkpoint_without_teacher_files_is_named(tmp_path):
    from tests.helpers.recipes import save_tiny_hat

    model = save_tiny_hat(tmp_path / "hat")
    with pytest.raises(FileNotFoundError, match="--no-teacher"):
        run_recipe("pretrain", model, tmp_path / "out", config=CONFIG)
