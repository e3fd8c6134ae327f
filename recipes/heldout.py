"""The learning curve of a conversion: held-out bits per byte as training goes, against training bytes and CPU time
(the demo's report and `benchmarks/bench_conversion_quality.py` draw it).

    callback = HeldoutCallback({"en": "data/corpus/en/heldout.txt", ...}, every=50, guidance=guidance)

At the start, every `every` optimizer steps and at the end it scores each held-out text with `hat.eval.intrinsic.
hat_bits_per_byte` (the closed loop: the HAT on its own, as the final report scores it) and, with a teacher, the
teacher-conditioned ("oracle") bits per byte: the decoder conditioned on the teacher's states at every word, which
says how much of the gap is the decoder's and how much the encoder's. It logs them with the real bytes trained on
so far (the Trainer's `num_input_tokens_seen` with `include_num_input_tokens_seen: non_padding`) and the process's
CPU seconds (all threads) next to the loss, and writes the whole curve to `<output_dir>/heldout_curve.json`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from hat.eval.intrinsic import byte_windows, hat_bits_per_byte

CURVE_FILE = "heldout_curve.json"


class HeldoutCallback(TrainerCallback):
    """Held-out bits per byte every `every` steps; see the module docstring.

    Args:
        files (`dict[str, str]`): label -> UTF-8 text file (e.g. `{"en": ..., "de": ...}`).
        every (`int`): optimizer steps between two evaluations (0: only at the end).
        guidance (`TeacherGuidance`, *optional*): also the teacher-conditioned bits per byte.
        collator (`TeacherCollator`, *optional*): aligns the held-out windows with the teacher's tokens.
        window (`int`): bytes per scored window (the demo's report uses 1024).
    """

    def __init__(self, files: dict[str, str], every: int, guidance=None, collator=None, window: int = 1024):
        self.texts = {label: Path(path).read_text(encoding="utf-8") for label, path in files.items()}
        self.every, self.guidance, self.collator, self.window = every, guidance, collator, window
        self.cpu_start = time.process_time()
        self.curve: list[dict[str, float]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.curve:  # where the run starts from (the fresh conversion, or the checkpoint it resumes)
            self._evaluate(state, model)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self._evaluate(state, model)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.curve or self.curve[-1]["step"] != state.global_step:
            self._evaluate(state, model)
        if state.is_world_process_zero:  # beside the checkpoint: the demo's report and the benchmark plot it
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.output_dir) / CURVE_FILE).write_text(json.dumps(self.curve, indent=1) + "\n")
        return control

    @torch.no_grad()
    def _evaluate(self, state, model) -> None:
        if not state.is_world_process_zero:
            return
        was_training = model.training
        model.eval()
        point = {"step": state.global_step, "train_bytes": state.num_input_tokens_seen,
                 "cpu_seconds": time.process_time() - self.cpu_start}
        for label, text in self.texts.items():
            point[f"heldout_{label}_bpb"] = hat_bits_per_byte(model, text, window=self.window, progress=False).bits_per_byte
            if self.guidance is not None and self.collator is not None:
                point[f"heldout_{label}_oracle_bpb"] = self.oracle_bits_per_byte(model, text)
        model.train(was_training)
        self.curve.append(point)
        state.log_history.append(dict(point))

    def oracle_bits_per_byte(self, model, text: str, batch_size: int = 4) -> float:
        """Bits per byte of `text` with the decoder conditioned on the teacher's states (windows as the closed loop's)."""
        rows = [w for w in byte_windows(text.encode("utf-8"), self.window) if len(w) > 1]
        nll, scored = 0.0, 0
        device = next(model.parameters()).device
        for i in range(0, len(rows), batch_size):
            batch = self.collator([{"input_ids": list(r)} for r in rows[i : i + batch_size]])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            total, count = self.guidance.oracle_nll(model, batch)
            nll, scored = nll + total, scored + count
        return nll / math.log(2) / scored
