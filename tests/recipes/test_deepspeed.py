"""The recipes under `accelerate launch` with DeepSpeed ZeRO-2 and ZeRO-3, 2 processes on CPU (gloo): losses,
frozen/unfrozen weights, resumed losses, the DPO reference and every save (marked slow).

    .venv/bin/python -m pytest tests/recipes/test_deepspeed.py            # about a minute per ZeRO stage

The launch runs `tests/helpers/deepspeed_driver.py`; recipes/README.md ("DeepSpeed on CPU") says what matters.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tests.helpers.recipes import DATA, REPO, TINY, assert_reloads, changed, is_inert, losses, weights, write_yaml


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_recipes_under_deepspeed(tiny_hat, tiny_hat_teacher, tmp_path, zero):
    from transformers import AutoModelForCausalLM

    # DPO on the 4 English pairs: 2 per process x 2 processes, so every step scores the same 4 pairs and the
    # reference log-probs can be read off the logs (logps - rewards / beta) and compared across steps.
    dpo_config = write_yaml(TINY / "dpo.yaml", tmp_path / "dpo.yaml", datasets=[{"path": "json", "data_files": str(DATA / "pref_en.jsonl")}])
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",  # DeepSpeed's CPU accelerator: gloo collectives, torch ops
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate_configs" / f"deepspeed_zero{zero}.yaml"),
        "--num_processes", "2", "--mixed_precision", "no",
        str(REPO / "tests" / "helpers" / "deepspeed_driver.py"), str(tiny_hat), str(tmp_path), str(dpo_config),
        str(tiny_hat_teacher),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    logs = json.loads((tmp_path / "logs.json").read_text())

    # Pretraining: loss logged and finite; backbone frozen for 2 steps, then trained; new parts trained
    first = losses(logs["pretrain"])
    assert sorted(first) == [1, 2, 3, 4] and all(math.isfinite(v) for v in first.values())
    initial, step2, step4 = weights(tiny_hat), weights(tmp_path / "pretrain" / "checkpoint-2"), weights(tmp_path / "pretrain" / "checkpoint-4")
    assert not any(changed(initial, step2, "backbone.").values())
    assert all(v for k, v in changed(initial, step2).items() if not k.startswith("backbone.") and not is_inert(k))
    assert not any(v for k, v in changed(initial, step4).items() if is_inert(k))
    assert all(changed(step2, step4, "backbone.").values())
    # The final save gathers the (ZeRO-3: sharded) weights into a HAT checkpoint that loads
    final = weights(tmp_path / "pretrain")
    assert final.keys() == initial.keys() and all(torch.equal(final[k], step4[k]) for k in final)
    assert_reloads(tmp_path / "pretrain")
    # Resumed from checkpoint 2: the same losses at steps 3 and 4, the same weights
    again = losses(logs["resumed"])
    assert sorted(again) == [1, 2, 3, 4] and all(again[s] == pytest.approx(first[s], rel=1e-4) for s in (3, 4))
    for name, tensor in weights(tmp_path / "resumed").items():
        torch.testing.assert_close(tensor, step4[name], rtol=1e-4, atol=1e-6)

    # Teacher-guided pretraining: the teacher's terms logged, the backbone (which serves the teacher pass too, sharded
    # under ZeRO-3) not a bit changed, the new parts trained; resumed from checkpoint 2, the same losses
    guided = [e for e in logs["teacher"] if "encoder_loss" in e]
    assert [e["own_fraction"] for e in guided] == [0.0, 0.5, 1.0, 1.0]
    assert all(math.isfinite(e[k]) for e in guided for k in ("loss", "encoder_loss", "byte_ce", "distill_loss"))
    start, trained = weights(tiny_hat_teacher), weights(tmp_path / "teacher")
    assert not any(changed(start, trained, "backbone.").values())
    assert all(v for k, v in changed(start, trained).items() if not k.startswith("backbone.") and not is_inert(k))
    first_guided, again_guided = losses(logs["teacher"]), losses(logs["teacher_resumed"])
    assert all(again_guided[s] == pytest.approx(first_guided[s], rel=1e-4) for s in (3, 4))
    assert_reloads(tmp_path / "teacher")

    # SFT: loss logged and finite, weights trained, checkpoint loads
    sft = losses(logs["sft"])
    assert sorted(sft) == [1, 2, 3] and all(math.isfinite(v) for v in sft.values())
    assert sum(changed(initial, weights(tmp_path / "sft")).values()) > len(initial) // 2
    assert_reloads(tmp_path / "sft")

    # DPO: loss logged and finite, weights trained; the reference stays the initial model
    dpo = [e for e in logs["dpo"] if "loss" in e]
    assert len(dpo) == 3 and all(math.isfinite(e["loss"]) for e in dpo)
    beta = yaml.safe_load((TINY / "dpo.yaml").read_text())["beta"]
    reference_logps = [e["logps/chosen"] - e["rewards/chosen"] / beta for e in dpo]
    assert reference_logps == pytest.approx([dpo[0]["logps/chosen"]] * 3, rel=1e-4)  # step 1: policy == reference
    assert dpo[-1]["logps/chosen"] != pytest.approx(dpo[0]["logps/chosen"], rel=1e-4)  # while the policy moves
    start = AutoModelForCausalLM.from_pretrained(tiny_hat).state_dict()
    for name, tensor in torch.load(tmp_path / "dpo_reference.pt").items():
        assert torch.equal(tensor, start[name]), name
    assert sum(changed(initial, weights(tmp_path / "dpo")).values()) > len(initial) // 2
    assert_reloads(tmp_path / "dpo")
