"""Resuming only from complete checkpoints (`hat.recipes.utils.resolve_resume`): a run killed while it writes a
checkpoint resumes from the one before with the uninterrupted run's loss curve; incomplete checkpoints are named,
moved aside, never loaded."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from hat.recipes.utils import checkpoint_problem, resolve_resume
from tests.helpers.recipes import REPO, Records, losses, recipe_args, run_recipe, weights


@pytest.fixture(scope="module")
def reference(tiny_hat, tmp_path_factory):
    """The uninterrupted tiny pretrain: 4 steps, checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, run_recipe("pretrain", tiny_hat, out)


@pytest.fixture
def utils_log():
    records = Records()
    logger = logging.getLogger("hat.recipes.utils")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    yield records.messages
    logger.removeHandler(records)
    logger.setLevel(level)


def test_killed_while_writing_a_checkpoint_resumes_with_the_same_loss_curve(tiny_hat, reference, tmp_path, utils_log):
    ref_dir, ref = reference
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "tests/helpers/kill_during_save.py", "4", "trainer_state", "pretrain",
         *recipe_args("pretrain", tiny_hat, run)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-3000:]
    partial = run / "checkpoint-4"
    assert (partial / "model.safetensors").is_file() and (partial / "optimizer.pt").is_file()
    assert "cut short" in checkpoint_problem(partial)  # the half-written trainer_state.json

    trainer = run_recipe("pretrain", tiny_hat, run, "--resume_from_checkpoint", "true")
    aside = run / "incomplete-checkpoint-4"
    assert f"{partial} is incomplete and is not resumed from: trainer_state.json is cut short or corrupt (the save " \
           f"was interrupted); moved aside to {aside}" in utils_log
    assert f"resuming from {run / 'checkpoint-2'}" in utils_log
    assert (aside / "model.safetensors").is_file()  # kept, not deleted
    assert checkpoint_problem(run / "checkpoint-4") is None  # written again, whole, by the resumed run
    # Steps 1-2 from checkpoint 2's trainer state, steps 3-4 trained again: the uninterrupted run's curve and weights
    assert losses(trainer.state.log_history) == losses(ref.state.log_history)
    assert sorted(losses(trainer.state.log_history)) == [1, 2, 3, 4]
    final, expected = weights(run), weights(ref_dir)
    assert final.keys() == expected.keys()
    for name, tensor in final.items():
        assert torch.equal(tensor, expected[name]), name


def damage(checkpoint: Path, how: str) -> None:
    if how == "empty":
        shutil.rmtree(checkpoint)
        checkpoint.mkdir()
    elif how == "no trainer state":
        (checkpoint / "trainer_state.json").unlink()
    elif how == "trainer state cut":
        state = checkpoint / "trainer_state.json"
        state.write_text(state.read_text()[:100])
    elif how == "other step":
        state = checkpoint / "trainer_state.json"
        state.write_text(json.dumps({**json.loads(state.read_text()), "global_step": 2}))
    elif how == "no weights":  # e.g. a rotation (`save_total_limit`) killed while it deleted the directory
        (checkpoint / "model.safetensors").unlink()
    elif how == "no optimizer":
        (checkpoint / "optimizer.pt").unlink()


@pytest.mark.parametrize("how, problem", [
    ("empty", "no trainer_state.json (the Trainer writes it last: the save was interrupted)"),
    ("no trainer state", "no trainer_state.json (the Trainer writes it last: the save was interrupted)"),
    ("trainer state cut", "trainer_state.json is cut short or corrupt (the save was interrupted)"),
    ("other step", "trainer_state.json is for step 2"),
    ("no weights", "no model weights"),
    ("no optimizer", "no optimizer state (saved with save_only_model, or damaged)"),
])  # fmt: skip
def test_incomplete_checkpoints_are_named_and_never_resumed(reference, tmp_path, how, problem, utils_log):
    ref_dir, _ = reference
    run = tmp_path / "run"
    for step in (2, 4):
        shutil.copytree(ref_dir / f"checkpoint-{step}", run / f"checkpoint-{step}")
    assert checkpoint_problem(run / "checkpoint-4") is None
    damage(run / "checkpoint-4", how)
    assert checkpoint_problem(run / "checkpoint-4") == problem

    # Given by path: refused, naming the complete one beside it; nothing is moved
    args = TrainingArguments(output_dir=str(run), resume_from_checkpoint=str(run / "checkpoint-4"), report_to="none")
    with pytest.raises(ValueError, match=rf"checkpoint-4 is incomplete \({re.escape(problem[:15])}.*the newest complete one is "
                                         rf".*checkpoint-2$"):
        resolve_resume(args)
    assert (run / "checkpoint-4").is_dir()

    # `true` (or the run directory): the newest complete one; the incomplete one moved aside, twice without a clash
    for value in ("true", "True"):
        (run / "checkpoint-4").mkdir(exist_ok=True)
        args = TrainingArguments(output_dir=str(run), resume_from_checkpoint=value, report_to="none")
        assert resolve_resume(args) == str(run / "checkpoint-2") == args.resume_from_checkpoint
    assert (run / "incomplete-checkpoint-4").is_dir() and (run / "incomplete-checkpoint-4-1").is_dir()
    assert not (run / "checkpoint-4").exists()
    assert f"resuming from {run / 'checkpoint-2'}" in utils_log


def test_resume_values(reference, tmp_path, utils_log):
    ref_dir, _ = reference
    for value in (None, False, "false", "False", ""):
        args = TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint=value, report_to="none")
        assert resolve_resume(args) is None
    # A checkpoint of another run, and another run's directory: used; an incomplete one there is only named
    other = tmp_path / "other"
    shutil.copytree(ref_dir / "checkpoint-2", other / "checkpoint-2")
    (other / "checkpoint-4").mkdir()
    args = TrainingArguments(output_dir=str(tmp_path / "new"), resume_from_checkpoint=str(other), report_to="none")
    assert resolve_resume(args) == str(other / "checkpoint-2")
    assert f"{other / 'checkpoint-4'} is incomplete and is not resumed from: no trainer_state.json (the Trainer " \
           "writes it last: the save was interrupted); left in place" in utils_log
    assert (other / "checkpoint-4").is_dir()
    for value, message in [
        (str(tmp_path / "nowhere"), "nowhere is not a directory"),
        (True, "no complete checkpoint-N in .*empty. Leave resume_from_checkpoint unset to train from the start"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        args = TrainingArguments(output_dir=str(tmp_path / "empty"), resume_from_checkpoint=value, report_to="none")
        with pytest.raises(ValueError, match=message):
            resolve_resume(args)
    # A run killed while it wrote its first checkpoint: nothing to resume, and the error says what was found
    first = tmp_path / "first"
    (first / "checkpoint-2").mkdir(parents=True)
    args = TrainingArguments(output_dir=str(first), resume_from_checkpoint="true", report_to="none")
    with pytest.raises(ValueError, match=re.escape(
        f"no complete checkpoint-N in {first} (only incomplete ones: checkpoint-2 (moved aside to "
        f"{first / 'incomplete-checkpoint-2'})). Leave resume_from_checkpoint unset to train from the start."
    )):
        resolve_resume(args)
