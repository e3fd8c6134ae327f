"""Run a recipe in this process and SIGKILL it while it writes `checkpoint-STEP` (`tests/recipes/test_resume.py`).

    PYTHONPATH=. python tests/helpers/kill_during_save.py STEP POINT pretrain --config ... --output_dir ...

POINT is where inside `Trainer._save_checkpoint` the kill comes, deterministically:
- `weights`: the model is saved, the optimizer, RNG and trainer state are not (the kill is the optimizer's save);
- `trainer_state`: everything but `trainer_state.json`, which the Trainer writes last: half of it is written and
  flushed, then the kill.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerState


def kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(step: int, point: str) -> None:
    """Patch the Trainer so that saving checkpoint-`step` dies at `point`."""
    name = f"checkpoint-{step}"
    if point == "weights":
        save_optimizer = Trainer._save_optimizer_and_scheduler

        def _save_optimizer_and_scheduler(self, output_dir):
            if Path(output_dir).name == name:
                kill()
            save_optimizer(self, output_dir)

        Trainer._save_optimizer_and_scheduler = _save_optimizer_and_scheduler
    elif point == "trainer_state":
        save_to_json = TrainerState.save_to_json

        def _save_to_json(self, json_path):
            if Path(json_path).parent.name != name:
                return save_to_json(self, json_path)
            save_to_json(self, json_path)
            text = Path(json_path).read_text()
            with open(json_path, "w") as f:  # as if the kill came in the middle of the Trainer's write
                f.write(text[: len(text) // 2])
                f.flush()
                os.fsync(f.fileno())
            kill()

        TrainerState.save_to_json = _save_to_json
    else:
        raise ValueError(f"unknown kill point {point!r}")


def main(step: str, point: str, stage: str, *args: str) -> None:
    arm(int(step), point)
    module = importlib.import_module(f"hat.recipes.{stage}")
    module.main(*module.make_parser().parse_args_and_config(list(args)))
    raise SystemExit(f"the run finished: checkpoint-{step} was never written")


if __name__ == "__main__":
    main(*sys.argv[1:])
