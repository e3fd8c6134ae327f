"""Teacher-guided stage 1 (recipes/teacher_guidance.py, recipes/pretrain.py with `teacher: true`)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.recipes import TINY, changed, is_inert, losses, run_recipe, weights

CONFIG = TINY / "pretrain_teacher.yaml"


def test_recipe_trains_the_new_parts_and_leaves_the_backbone_bit_identical(tiny_hat_teacher, tmp_path):
    # with the teacher cache: the resumed run below recomputes what the first one kept, and must match it
    trainer = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", "--teacher_cache_gb", "0.01", config=CONFIG)
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


def test_detached_own_states_give_the_same_loss_and_no_gradient_through_the_backbone(tiny_hat_teacher, tmp_path):
    """detach_own_states: the decoder reads the same backbone output, but its loss stops there: with only byte
    cross-entropy, the pooling (which feeds nothing but the backbone) gets no gradient; without it, it does."""
    trainer = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", "--max_steps", "1", "--save_strategy", "no",
                         config=CONFIG)
    model, guidance = trainer.model.train(), trainer.guidance
    guidance.w.encoder_loss_weight = guidance.w.distill_loss_weight = 0.0
    batch = trainer.data_collator([{"input_ids": list(b"Hello world. Guten Morgen!")}, {"input_ids": list(b"Hi.")}])
    pooling = list(model.model.encoder_connector.parameters())
    result = {}
    for detach in (False, True):
        guidance.w.detach_own_states = detach
        model.zero_grad(set_to_none=True)
        loss, _ = guidance.loss(model, dict(batch), step=5)  # past oracle (1) and handoff (2): own fraction 1
        loss.backward()
        result[detach] = loss.detach(), [p.grad for p in pooling]
    torch.testing.assert_close(result[True][0], result[False][0])
    assert any(g is not None and bool(g.abs().sum() > 0) for g in result[False][1])
    assert all(g is None or not bool(g.abs().sum() > 0) for g in result[True][1])


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


def test_a_row_seen_again_costs_no_teacher_pass_and_the_same_loss(tiny_hat_teacher, tmp_path):
    from hat.recipes.teacher_cache import TeacherCache

    trainer = run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", "--max_steps", "1", "--save_strategy", "no",
                         config=CONFIG)
    model, guidance = trainer.model.eval(), trainer.guidance
    batch = trainer.data_collator([{"input_ids": list("Hello world. Grüße aus Köln! 🙂".encode())},
                                   {"input_ids": list(b"Hi there.")}])
    recomputed = {step: guidance.loss(model, dict(batch), step) for step in (0, 1, 2)}  # no cache: always a pass
    oracle = guidance.oracle_nll(model, dict(batch))
    assert guidance.cache.rows == {}

    guidance.cache = TeacherCache(2**30)
    guidance.loss(model, dict(batch), 0)  # both rows are new: one teacher pass, kept
    assert (guidance.cache.misses, len(guidance.cache.rows)) == (2, 2)
    original = guidance.teacher.forward
    guidance.teacher.forward = lambda *a, **k: pytest.fail("the teacher ran for a row it had seen")
    try:
        for step, (loss, metrics) in recomputed.items():  # oracle, handoff, own: the same loss from the kept rows
            again, again_metrics = guidance.loss(model, dict(batch), step)
            torch.testing.assert_close(again, loss)
            assert again_metrics == pytest.approx(metrics, rel=1e-5)
        assert guidance.oracle_nll(model, dict(batch)) == pytest.approx(oracle, rel=1e-5)
    finally:
        guidance.teacher.forward = original
    assert guidance.cache.hits == 8


def test_the_teacher_cache_keeps_rows_up_to_its_size_each_in_its_own_storage():
    from hat.recipes.teacher_cache import TeacherCache, TeacherRow, row_key

    batch_states = torch.randn(3, 10, 8)  # 3 rows of a batch's tensor: 10 x 8 float32 = 320 bytes each
    rows = [TeacherRow(last=batch_states[i]) for i in range(3)]
    cache = TeacherCache(max_bytes=700)
    keys = [row_key(torch.tensor(list(text))) for text in (b"a", b"b", b"c")]
    for key, row in zip(keys, rows):
        cache.put(key, row)
    assert list(cache.rows) == keys[:2] and cache.nbytes == 640  # the third would exceed 700 bytes: not kept
    kept = cache.get(keys[0]).last
    assert kept.untyped_storage().nbytes() == 320  # a copy, not a view keeping the whole batch alive
    torch.testing.assert_close(kept, batch_states[0])
    assert cache.get(keys[2]) is None and (cache.hits, cache.misses) == (1, 1)
    assert len(set(keys)) == 3 and row_key(torch.tensor([1, 2])) != row_key(torch.tensor([1, 2, 0]))
    with pytest.raises(ValueError, match="teacher cache"):
        TeacherCache(-1)


def test_the_teacher_cache_is_refused_under_zero3(tiny_hat_teacher, tmp_path, monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    with pytest.raises(ValueError, match="ZeRO-3"):
        run_recipe("pretrain", tiny_hat_teacher, tmp_path / "out", "--teacher_cache_gb", "1", config=CONFIG)
