"""The driver of one DeepSpeed launch of the recipe tests (`tests/recipes/test_deepspeed.py`): in one
`accelerate launch`, pretrain, a resumed pretrain, SFT and DPO, as the recipes' `main`s, with their log histories and
the DPO reference weights (gathered) written to OUT.

    DS_ACCELERATOR=cpu PYTHONPATH=. accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero2.yaml \
        --num_processes 2 --mixed_precision no tests/helpers/deepspeed_driver.py MODEL OUT DPO_CONFIG TEACHER_MODEL

One launch for the four runs: DeepSpeed's start (and its op JIT) costs more than the tiny runs themselves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tests.helpers.recipes import TINY, run_recipe


def main(model: str, out: str, dpo_config: str, teacher_model: str) -> None:
    """One `accelerate launch`: pretrain (4 steps, checkpoints at 2 and 4), pretrain resumed from checkpoint 2,
    teacher-guided pretrain and its resumed run (on `teacher_model`, a HAT with teacher files), SFT, DPO; writes each
    run's log history, and the DPO reference weights (gathered), to `out`."""
    import deepspeed

    out = Path(out)
    results = {}
    teacher_config = TINY / "pretrain_teacher.yaml"
    for name, stage, overrides, config in [
        ("teacher", "pretrain", ["--model_name_or_path", teacher_model], teacher_config),
        ("teacher_resumed", "pretrain", ["--model_name_or_path", teacher_model, "--resume_from_checkpoint",
                                         str(out / "teacher" / "checkpoint-2")], teacher_config),
        ("pretrain", "pretrain", [], None),
        ("resumed", "pretrain", ["--resume_from_checkpoint", str(out / "pretrain" / "checkpoint-2")], None),
        ("sft", "sft", [], None),
        ("dpo", "dpo", [], Path(dpo_config)),
    ]:
        # no --ddp_backend: without an accelerator, the recipes choose gloo for several processes themselves
        trainer = run_recipe(stage, Path(model), out / name, *overrides, config=config)
        results[name] = trainer.state.log_history
    ref = trainer.ref_model  # a DeepSpeed engine; under ZeRO-3 its parameters are sharded
    with deepspeed.zero.GatheredParameters(list(ref.parameters())):
        reference = {n: p.detach().clone() for n, p in ref.module.named_parameters()}
    if trainer.accelerator.is_main_process:
        (out / "logs.json").write_text(json.dumps(results))
        torch.save(reference, out / "dpo_reference.pt")
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
