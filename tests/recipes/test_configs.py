"""The configuration files of the recipes: every recipe YAML fills its dataclasses and opens with its command; every
accelerate config is what recipes/README.md says it is."""

from __future__ import annotations

import glob
import importlib
from pathlib import Path

import pytest

from tests.helpers.recipes import REPO

RECIPE_YAMLS = sorted(p for p in glob.glob(str(REPO / "recipes" / "*" / "*.yaml")) if "accelerate_configs" not in p)
ACCELERATE_CONFIGS = sorted(glob.glob(str(REPO / "recipes" / "accelerate_configs" / "*.yaml")))

# recipes/README.md's table of accelerate configs: distributed type, machines x processes, ZeRO stage, where
# parameters and optimizer states live, whether ZeRO-3 gathers 16-bit weights on save
EXPECTED_ACCELERATE = {
    "single_device.yaml": ("NO", 1, 1, None, None, None),
    "multi_gpu.yaml": ("MULTI_GPU", 1, 8, None, None, None),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 1, 8, 2, "none", None),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 1, 8, 3, "none", True),
    "deepspeed_zero3_offload.yaml": ("DEEPSPEED", 1, 8, 3, "cpu", True),
    "multi_node.yaml": ("DEEPSPEED", 4, 32, 3, "none", True),
}


@pytest.mark.parametrize("path", RECIPE_YAMLS, ids=lambda p: str(Path(p).relative_to(REPO / "recipes")))
def test_every_recipe_yaml_parses(path):
    """Each YAML fills its recipe's dataclasses with no key left over, and opens with its launch command."""
    stage = Path(path).stem.split("_")[0]  # pretrain.yaml, pretrain_teacher.yaml, sft_lora.yaml, ...
    module = importlib.import_module(f"hat.recipes.{stage}")
    # use_cpu: the GPU recipes ask for bf16, which TrainingArguments only accepts on a CPU when told so
    data_args, training_args, model_args = module.make_parser().parse_args_and_config(
        ["--config", path, "--use_cpu", "true"]
    )
    assert data_args.datasets and all(s.path and s.probability > 0 for s in data_args.datasets)
    for source in data_args.datasets + data_args.eval_datasets:  # local files named relative to the repository
        files = [source.data_files] if isinstance(source.data_files, str) else source.data_files or []
        assert all((REPO / f).is_file() for f in files), files
    assert model_args.model_name_or_path
    first_line = Path(path).read_text().splitlines()[0]
    assert first_line.startswith("# accelerate launch --config_file recipes/accelerate_configs/")
    assert f"recipes/{stage}.py --config recipes/{Path(path).parent.name}/{Path(path).name}" in first_line
    config_file = first_line.split("--config_file ")[1].split()[0]
    assert (REPO / config_file).is_file()
    if stage in ("sft", "dpo"):
        assert not training_args.padding_free
    if stage == "sft":
        assert training_args.assistant_only_loss and not training_args.packing
    if Path(path).stem.endswith("_lora"):
        assert model_args.use_peft
    if stage == "pretrain" and training_args.teacher:  # the teacher's phases fit in the run
        assert training_args.oracle_steps + training_args.handoff_steps <= training_args.max_steps


def test_every_accelerate_config_is_in_the_table():
    assert sorted(Path(p).name for p in ACCELERATE_CONFIGS) == sorted(EXPECTED_ACCELERATE)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: Path(p).name)
def test_accelerate_configs_load_as_documented(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(path)
    kind, machines, processes, zero, offload, save_16bit = EXPECTED_ACCELERATE[Path(path).name]
    assert (config.distributed_type, config.num_machines, config.num_processes) == (kind, machines, processes)
    assert config.use_cpu is False  # `--cpu` would silently drop DeepSpeed (recipes/README.md)
    ds = config.deepspeed_config or {}
    assert ds.get("zero_stage") == zero
    if zero is not None:
        assert ds["offload_param_device"] == ds["offload_optimizer_device"] == offload
        assert ds.get("zero3_save_16bit_model") == save_16bit
        assert ds["zero3_init_flag"] is (zero == 3)  # ZeRO-3 loads the weights already sharded
        # no optimizer or scheduler of DeepSpeed's: the HF Trainer builds torch AdamW and the per-group schedule
        assert "deepspeed_config_file" not in ds
    if machines > 1:
        assert config.main_process_ip and config.main_process_port
