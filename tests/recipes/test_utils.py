"""hat.recipes.utils: the recipes' parser picks gloo for multi-process runs on a machine without an accelerator."""

from __future__ import annotations

import pytest
import torch
from trl import ModelConfig, SFTConfig

from hat.recipes.data import DataArguments
from hat.recipes.utils import recipe_parser


@pytest.mark.parametrize("world_size, accelerator, expected", [("2", False, "gloo"), ("1", False, None),
                                                                ("2", True, None)])
def test_ddp_backend_defaults_to_gloo_for_processes_without_an_accelerator(monkeypatch, world_size, accelerator,
                                                                             expected):
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator)
    parser = recipe_parser((DataArguments, SFTConfig, ModelConfig))
    assert parser.get_default("ddp_backend") == expected
    # a YAML or the command line still chooses: defaults only
    parser.set_defaults_with_config(ddp_backend="nccl")
    assert parser.get_default("ddp_backend") == "nccl"
