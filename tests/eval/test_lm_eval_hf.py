"""`lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True` on a saved HAT, in a process that cannot
import `hat`: the same scores as `hat-eval` (model `hat`), request by request, for bits per byte and a
multiple-choice task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hat import HATConfig, HATForCausalLM
from hat.eval.harness import TASKS_DIR, HATLM
from hat.tokenizer import build_tokenizer
from tests.helpers.scoring import local_task_manager

TEXTS = ["Hello, world! The quick brown fox jumps over the lazy dog.", "Straße über Brücken: „Grüß Gott“ und 3,14 €."]


def write_tasks(folder: Path) -> Path:
    """hat_mc_en's documents and prompt as a plain lm-eval task (no `hat` import), and bits per byte on TEXTS."""
    folder.mkdir()
    (folder / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    common = "dataset_path: json\ntest_split: test\nmetadata:\n  version: 1.0\n"
    (folder / "mc.yaml").write_text(textwrap.dedent(f"""\
        task: hf_mc_en
        dataset_kwargs:
          data_files:
            test: {TASKS_DIR / "hat_mc" / "hat_mc_en.jsonl"}
        output_type: multiple_choice
        doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: answer
        target_delimiter: " "
        metric_list:
          - metric: acc
        """) + common)
    (folder / "bpb.yaml").write_text(textwrap.dedent(f"""\
        task: hf_bpb
        dataset_kwargs:
          data_files:
            test: {folder / "text.jsonl"}
        output_type: loglikelihood_rolling
        doc_to_text: ""
        doc_to_target: "{{{{text}}}}"
        metric_list:
          - metric: bits_per_byte
        """) + common)
    return folder


RUN_WITHOUT_HAT = "import sys; sys.modules['hat'] = None; from lm_eval.__main__ import cli_evaluate; " \
                  "sys.argv = ['lm_eval', *sys.argv[1:]]; cli_evaluate()"


@pytest.mark.slow
def test_lm_eval_hf_with_remote_code_scores_like_hat_eval(tmp_path):
    torch.manual_seed(0)
    model = HATForCausalLM(HATConfig.tiny()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # scores that differ between choices
    model.save_pretrained(tmp_path / "hat")
    build_tokenizer().save_pretrained(tmp_path / "hat")
    tasks = write_tasks(tmp_path / "tasks")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_MODULES_CACHE": str(tmp_path / "modules")}  # fmt: skip
    command = [sys.executable, "-c", RUN_WITHOUT_HAT, "--model", "hf", "--model_args",
               f"pretrained={tmp_path / 'hat'},trust_remote_code=True,dtype=float32", "--device", "cpu",
               "--tasks", "hf_mc_en,hf_bpb", "--include_path", str(tasks), "--limit", "6", "--batch_size", "2",
               "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [results] = (tmp_path / "out").rglob("results_*.json")
    hf = json.loads(results.read_text())["results"]
    hf_samples = {task: [json.loads(line) for line in next((tmp_path / "out").rglob(f"samples_{task}_*.jsonl")).open()]
                  for task in ("hf_mc_en", "hf_bpb")}

    import lm_eval

    ours = lm_eval.simple_evaluate(model=HATLM(pretrained=str(tmp_path / "hat"), batch_size=2, device="cpu"),
                                   tasks=["hf_mc_en", "hf_bpb"], task_manager=local_task_manager(tasks), limit=6,
                                   log_samples=True)
    assert hf["hf_mc_en"]["acc,none"] == ours["results"]["hf_mc_en"]["acc,none"]
    assert hf["hf_bpb"]["bits_per_byte,none"] == pytest.approx(ours["results"]["hf_bpb"]["bits_per_byte,none"], rel=1e-5)
    for task in ("hf_mc_en", "hf_bpb"):
        theirs = {s["doc_id"]: s["resps"] for s in hf_samples[task]}
        mine = {s["doc_id"]: s["resps"] for s in ours["samples"][task]}
        assert theirs.keys() == mine.keys() and len(mine) == (6 if task == "hf_mc_en" else len(TEXTS))
        for doc_id, resps in mine.items():
            got = [float(r[0][0]) if isinstance(r[0], list) else float(r[0]) for r in theirs[doc_id]]
            want = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in resps]
            assert got == pytest.approx(want, abs=1e-4), (task, doc_id)
    # the multiple-choice scores are not all alike: the comparison can fail
    assert len({round(float(r[0][0]), 3) for s in ours["samples"]["hf_mc_en"] for r in s["resps"]}) > 4
