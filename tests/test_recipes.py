"""The recipes on CPU at tiny size: every YAML parses; pretrain, SFT and DPO train a few steps in this process and
under `accelerate launch` with DeepSpeed ZeRO-2 and ZeRO-3 in 2 processes (gloo); bad input fails clearly.

    .venv/bin/python -m pytest tests/test_recipes.py            # all (the DeepSpeed ones are marked slow)
    .venv/bin/python -m pytest tests/test_recipes.py -m "not slow"

Run as a script, this file is the driver of one DeepSpeed launch (see `_deepspeed_driver`).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny"
DATA = REPO / "tests" / "data" / "recipes"
RECIPE_YAMLS = sorted(p for p in glob.glob(str(REPO / "recipes" / "*" / "*.yaml")) if "accelerate_configs" not in p)
ACCELERATE_CONFIGS = sorted(glob.glob(str(REPO / "recipes" / "accelerate_configs" / "*.yaml")))
EOT = 192

# The known multi-turn conversation (first line of chat_en.jsonl) and its bytes under the Llama 3.1 template
KNOWN_CHAT = [("user", "Say hi."), ("assistant", "Hi!"), ("user", "And in German?"), ("assistant", "Hallo!")]


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def in_repo():
    """The YAMLs name their data relative to the repository root."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        yield
    finally:
        os.chdir(cwd)


def recipe_args(stage: str, model: Path, out: Path, *overrides: str, config: Path | None = None) -> list[str]:
    config = config or TINY / f"{stage}.yaml"
    return ["--config", str(config), "--model_name_or_path", str(model), "--output_dir", str(out), *overrides]


def run_recipe(stage: str, model: Path, out: Path, *overrides: str, config: Path | None = None):
    """Parse like the command line does and run the recipe's `main`; returns its trainer."""
    module = importlib.import_module(f"recipes.{stage}")
    with in_repo():
        args = module.make_parser().parse_args_and_config(recipe_args(stage, model, out, *overrides, config=config))
        return module.main(*args)


def losses(log_history: list[dict]) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}


def weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, under their on-disk (release) names."""
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> dict[str, bool]:
    return {k: not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix)}


def is_inert(name: str) -> bool:
    from hat.model.parts import INERT_PARAMETERS

    return ".decoder_layers." in name and name.endswith(INERT_PARAMETERS)


def assert_reloads(path: Path) -> None:
    """`from_pretrained` loads the saved HAT and its tokenizer with the stock Auto classes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["Hallo Welt", "Hi"], return_tensors="pt", padding=True)
    assert torch.isfinite(model(**batch).logits).all()
    for name, tensor in weights(path).items():  # what is on disk is what loaded
        torch.testing.assert_close(model.state_dict()[f"model.{name}" if name != "lm_head.weight" else name], tensor)


def write_yaml(base: Path, path: Path, **changes) -> Path:
    config = yaml.safe_load(base.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_hat(tmp_path_factory) -> Path:
    """A seeded HATConfig.tiny() checkpoint with its tokenizer files."""
    from hat import HATConfig, HATForCausalLM
    from hat.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("tiny-hat")
    torch.manual_seed(0)
    HATForCausalLM(HATConfig.tiny()).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------------------------------
# Configuration files
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", RECIPE_YAMLS, ids=lambda p: str(Path(p).relative_to(REPO / "recipes")))
def test_every_recipe_yaml_parses(path):
    """Each YAML fills its recipe's dataclasses with no key left over, and opens with its launch command."""
    stage = Path(path).stem.removesuffix("_lora")
    module = importlib.import_module(f"recipes.{stage}")
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


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: Path(p).name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(path)
    if "deepspeed" in Path(path).name or "multi_node" in Path(path).name:
        assert config.distributed_type == "DEEPSPEED"
        assert config.deepspeed_config["zero_stage"] in (2, 3)


# ----------------------------------------------------------------------------------------------------------
# Data helpers
# ----------------------------------------------------------------------------------------------------------
def test_pack_words_cuts_at_word_boundaries():
    from hat.data import pack_words
    from hat.splitter import split_words

    docs = ["Der Fluss fließt an der alten Mühle vorbei.", "", "Short.", "A " * 40 + "end."]
    sequences = pack_words(docs, max_length_bytes=24, max_word_size=10, eos_id=EOT)
    stream = b"".join(bytes(s) for s in sequences)
    assert stream == b"".join(d.encode() + bytes([EOT]) for d in docs if d)  # nothing lost, each doc ends in eos
    assert all(len(s) <= 24 for s in sequences)
    words = [w for d in docs if d for w in [*split_words(d, 10), bytes([EOT])]]
    starts = {sum(map(len, words[:i])) for i in range(len(words))}
    offsets = [sum(map(len, sequences[:i])) for i in range(len(sequences))]
    assert set(offsets) <= starts  # every sequence starts at a word
    with pytest.raises(ValueError, match="max_length_bytes"):
        pack_words(docs, max_length_bytes=8, max_word_size=10, eos_id=EOT)


def test_preference_as_chat():
    from hat.data import preference_as_chat

    plain = {"prompt": "Q?", "chosen": "A.", "rejected": "B."}
    assert preference_as_chat(plain) == {
        "prompt": [{"role": "user", "content": "Q?"}],
        "chosen": [{"role": "assistant", "content": "A."}],
        "rejected": [{"role": "assistant", "content": "B."}],
    }
    chat = {"chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], "rejected": []}
    assert preference_as_chat(chat) is chat


# ----------------------------------------------------------------------------------------------------------
# Pretraining: frozen backbone, then unfrozen; resume
# ----------------------------------------------------------------------------------------------------------
def test_pretrain_freezes_backbone_then_unfreezes_and_resumes(tiny_hat, tmp_path):
    """4 steps, backbone frozen (lr 0) for 2, checkpoints at 2 and 4; then a run resumed from checkpoint 2."""
    run = tmp_path / "run"
    trainer = run_recipe("pretrain", tiny_hat, run)
    first = losses(trainer.state.log_history)
    assert sorted(first) == [1, 2, 3, 4] and all(math.isfinite(v) for v in first.values())

    initial, step2, step4 = weights(tiny_hat), weights(run / "checkpoint-2"), weights(run / "checkpoint-4")
    # Frozen phase: AdamW with lr 0 leaves the backbone bit for bit (weight decay included)
    assert not any(changed(initial, step2, "backbone.").values())
    new_parts = {k: v for k, v in changed(initial, step2).items() if not k.startswith("backbone.")}
    assert all(v for k, v in new_parts.items() if not is_inert(k)), [k for k, v in new_parts.items() if not v]
    assert not any(v for k, v in new_parts.items() if is_inert(k))
    # Unfrozen: every backbone tensor moves
    assert all(changed(step2, step4, "backbone.").values())
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert lrs[0] == 0 and lrs[1] == pytest.approx(1e-3)  # warmup 1 step, then the peak; cosine to 10% after
    groups = trainer.optimizer.param_groups
    assert [g["backbone"] for g in groups] == [False, False, True, True]
    assert groups[2]["lr"] == groups[3]["lr"] == pytest.approx(0.1 * groups[0]["lr"])  # backbone_lr_ratio x lr

    # The final save is a HAT checkpoint with release key names that loads with the Auto classes
    assert weights(run).keys() == initial.keys()
    assert_reloads(run)

    # A run stopped after checkpoint 2 and resumed from it continues the same loss curve to the same weights
    resumed = tmp_path / "resumed"
    trainer = run_recipe("pretrain", tiny_hat, resumed, "--resume_from_checkpoint", str(run / "checkpoint-2"))
    again = losses(trainer.state.log_history)  # steps 1-2 come from the checkpoint's trainer state
    assert sorted(again) == [1, 2, 3, 4] and trainer.state.global_step == 4
    for step in (3, 4):
        assert again[step] == pytest.approx(first[step], rel=1e-5)
    for name, tensor in weights(resumed).items():
        torch.testing.assert_close(tensor, step4[name], rtol=1e-5, atol=1e-6)


def test_pretrain_streams_text_and_evaluates(tiny_hat, tmp_path):
    """The streaming path of the Hub recipes (IterableDataset, shuffle buffer, per-process shards), on local text."""
    import datasets

    config = write_yaml(
        TINY / "pretrain.yaml", tmp_path / "recipe.yaml", streaming=True, max_steps=2, save_strategy="no",
        eval_datasets=[{"path": "text", "data_files": str(DATA / "de.txt")}], eval_strategy="steps", eval_steps=2,
    )  # fmt: skip
    trainer = run_recipe("pretrain", tiny_hat, tmp_path / "out", config=config)
    assert isinstance(trainer.train_dataset, datasets.IterableDataset)
    assert sorted(losses(trainer.state.log_history)) == [1, 2]
    eval_losses = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert len(eval_losses) == 1 and math.isfinite(eval_losses[0])


# ----------------------------------------------------------------------------------------------------------
# SFT
# ----------------------------------------------------------------------------------------------------------
SFT_MAX_LENGTH = 240  # bytes: cuts the 4 longest tiny conversations, keeps the known one (229 bytes) whole


@pytest.fixture(scope="module")
def sft_run(tiny_hat, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    handler = _Records()
    logging.getLogger().addHandler(handler)
    try:
        trainer = run_recipe("sft", tiny_hat, out, "--max_length", str(SFT_MAX_LENGTH))
    finally:
        logging.getLogger().removeHandler(handler)
    return trainer, out, handler.messages


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_sft_trains_and_saves(sft_run, tiny_hat):
    trainer, out, _ = sft_run
    steps = losses(trainer.state.log_history)
    assert sorted(steps) == [1, 2, 3] and all(math.isfinite(v) for v in steps.values())
    before, after = weights(tiny_hat), weights(out)
    moved = changed(before, after)
    assert not any(v for k, v in moved.items() if is_inert(k))  # frozen by construction
    for part in ("encoder.", "encoder_connector.", "backbone.", "decoder.", "lm_head."):
        assert all(v for k, v in moved.items() if k.startswith(part) and not is_inert(k)), part
    assert_reloads(out)


def test_sft_loss_only_on_assistant_bytes(sft_run):
    """The known two-turn chat through TRL's dataset preparation and collator: labels are the assistant replies and
    their `<|eot_id|>`, everything else -100; padding is -100 and masked out."""
    trainer, _, _ = sft_run

    def text(s: str) -> list[int]:
        return list(s.encode())

    ids, mask = text("<|begin_of_text|>"), []
    for role, content in KNOWN_CHAT:
        ids += text(f"<|start_header_id|>{role}<|end_header_id|>\n\n")
        mask += [0] * (len(ids) - len(mask))
        ids += text(content) + [EOT]
        mask += [int(role == "assistant")] * (len(ids) - len(mask))
    expected_labels = [i if m else -100 for i, m in zip(ids, mask)]

    rows = [row for row in trainer.train_dataset if row["input_ids"] == ids]
    assert len(rows) == 1, "the known conversation is in the tiny mixture"
    assert rows[0]["labels"] == expected_labels
    shorter = min(trainer.train_dataset, key=lambda row: len(row["input_ids"]))
    batch = trainer.data_collator([rows[0], shorter])
    assert batch["labels"][0].tolist() == expected_labels
    n = len(shorter["input_ids"])
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (len(ids) - n)
    assert (batch["labels"][1, n:] == -100).all()
    assert bytes(i for i in batch["input_ids"][0][batch["labels"][0] != -100].tolist()) == b"Hi!\xc0Hallo!\xc0"


def test_sft_counts_truncated_conversations(sft_run, tiny_hat):
    from hat.data import DataSource, load_mixture
    from hat.tokenizer import HATTokenizer

    trainer, _, messages = sft_run
    tokenizer = HATTokenizer.from_pretrained(tiny_hat)
    sources = [DataSource("json", data_files=str(DATA / f"chat_{lang}.jsonl"), probability=0.5) for lang in ("en", "de")]
    mixture = load_mixture(sources, columns=("messages",), seed=0)
    lengths = [len(tokenizer.apply_chat_template(m)["input_ids"]) for m in mixture["messages"]]
    over = sum(n > SFT_MAX_LENGTH for n in lengths)
    assert over > 0
    assert any(f"{over} of {len(lengths)} conversations are longer than max_length ({SFT_MAX_LENGTH} bytes)" in m for m in messages)
    assert all(len(row["input_ids"]) <= SFT_MAX_LENGTH for row in trainer.train_dataset)


def test_sft_lora_then_merge(tiny_hat, tmp_path):
    """LoRA on the backbone's attention and MLP, the HAT parts trained in full; the merged checkpoint is the model
    that was trained, as a plain HAT checkpoint."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hat.recipes.merge_lora import merge

    out = tmp_path / "lora"
    trainer = run_recipe("sft", tiny_hat, out, "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
                         "--learning_rate", "1e-2", "--max_steps", "2")  # fmt: skip
    model = trainer.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".lora_A." in n and ".backbone.layers." in n for n in trainable)
    assert not any(".lora_" in n and ".backbone." not in n for n in trainable)  # adapters on the backbone only
    assert not any(".backbone." in n and ".lora_" not in n for n in trainable)  # base backbone frozen
    # Every parameter outside the backbone that trains in full fine-tuning trains here, as a PEFT copy
    plain = AutoModelForCausalLM.from_pretrained(tiny_hat)
    full = {n for n, p in plain.named_parameters() if p.requires_grad and ".backbone." not in n}
    copies = {n.removeprefix("base_model.model.").replace("modules_to_save.default.", "") for n in trainable if ".lora_" not in n}
    assert copies == full
    assert not any(is_inert(n) for n in trainable)
    initial = plain.state_dict()
    base = model.get_base_model()
    for name, param in base.named_parameters():  # the base weights (LoRA's and the originals of the copies) stay
        if ".lora_" in name or ".modules_to_save." in name:
            continue
        key = name.replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(param, initial[key]), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in base.named_parameters() if ".lora_B." in n)

    merged = tmp_path / "merged"
    merge(str(out), str(merged))
    assert_reloads(merged)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_hat), out).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = torch.tensor([list("Hallo Welt, hello world.".encode())])
    with torch.no_grad():
        torch.testing.assert_close(merged_model(ids).logits, reloaded(ids).logits, rtol=1e-4, atol=1e-5)
        with reloaded.disable_adapter():
            plain = AutoModelForCausalLM.from_pretrained(tiny_hat).eval()
            torch.testing.assert_close(reloaded(ids).logits, plain(ids).logits)


# ----------------------------------------------------------------------------------------------------------
# DPO
# ----------------------------------------------------------------------------------------------------------
def test_dpo_full_reference_stays_and_overlong_pairs_are_counted(tiny_hat, tmp_path, caplog):
    """Without LoRA the reference is a second copy of the checkpoint; training leaves it as it was. With max_length
    140 bytes, pairs whose prompt alone fills it are dropped and longer ones are cut; both counts are logged."""
    from transformers import AutoModelForCausalLM

    from hat.data import DataSource, load_mixture, preference_as_chat

    caplog.set_level(logging.WARNING)
    out = tmp_path / "dpo"
    trainer = run_recipe("dpo", tiny_hat, out, "--max_length", "140")
    steps = losses(trainer.state.log_history)
    assert sorted(steps) == [1, 2, 3] and all(math.isfinite(v) for v in steps.values())
    assert steps[1] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at the start

    initial = AutoModelForCausalLM.from_pretrained(tiny_hat).state_dict()
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    for name, tensor in trainer.ref_model.state_dict().items():
        assert torch.equal(tensor, initial[name]), name
    moved = changed(weights(tiny_hat), weights(out))
    assert sum(moved.values()) > len(moved) // 2
    assert not any(v for k, v in moved.items() if is_inert(k))
    assert_reloads(out)

    sources = [DataSource("json", data_files=str(DATA / f"pref_{lang}.jsonl"), probability=0.5) for lang in ("en", "de")]
    mixture = load_mixture(sources, columns=("chosen", "rejected"), optional_columns=("prompt",), transform=preference_as_chat)
    prepared = trainer.train_dataset
    dropped = len(mixture) - len(prepared)
    cut = sum(len(p) + max(len(c), len(r)) > 140 for p, c, r in
              zip(prepared["prompt_ids"], prepared["chosen_ids"], prepared["rejected_ids"]))  # fmt: skip
    assert dropped > 0 and cut > 0 and all(len(p) < 140 for p in prepared["prompt_ids"])
    warning = [r.getMessage() for r in caplog.records if "pairs are longer than max_length" in r.getMessage()]
    assert warning and f"{cut} of {len(prepared)} pairs" in warning[0] and f"{dropped} pairs dropped" in warning[0]


def test_dpo_lora_reference_is_the_adapter_disabled_model(tiny_hat, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dpo-lora"
    trainer = run_recipe("dpo", tiny_hat, out, "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
                         "--learning_rate", "1e-2", "--max_steps", "2")  # fmt: skip
    assert trainer.ref_model is None
    model = trainer.model.eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_hat).eval()
    ids = torch.tensor([list("Was ist die Hauptstadt von Italien? Rom.".encode())])
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, plain(ids).logits)
    assert not torch.allclose(trained, plain(ids).logits)


def test_dpo_precomputed_reference_log_probs(tiny_hat, tmp_path):
    """`precompute_ref_log_probs: true`: no reference model is kept; its log-probs are computed once, up front."""
    trainer = run_recipe("dpo", tiny_hat, tmp_path / "out", "--precompute_ref_log_probs", "true", "--max_steps", "2")
    assert trainer.ref_model is None
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    steps = losses(trainer.state.log_history)
    assert steps[1] == pytest.approx(math.log(2), abs=1e-4) and math.isfinite(steps[2])


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------
def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "stage, rows, match",
    [
        ("pretrain", [{"content": "text under the wrong name"}], r"has no column \['text'\]; its columns are \['content'\]"),
        ("sft", [{"conversation": [{"role": "user", "content": "hi"}]}], r"has no column \['messages'\]"),
        ("dpo", [{"prompt": "Q?", "chosen": "A."}], r"has no column \['rejected'\]"),
        ("sft", [], r"is empty"),
    ],
)
def test_bad_datasets_fail_clearly(tiny_hat, tmp_path, stage, rows, match):
    data = _jsonl(tmp_path / "data.jsonl", rows)
    config = write_yaml(TINY / f"{stage}.yaml", tmp_path / "recipe.yaml", datasets=[{"path": "json", "data_files": str(data)}])
    with pytest.raises(ValueError, match=match):
        run_recipe(stage, tiny_hat, tmp_path / "out", config=config)


def test_empty_text_file_fails_clearly(tiny_hat, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    config = write_yaml(TINY / "pretrain.yaml", tmp_path / "recipe.yaml",
                        datasets=[{"path": "text", "data_files": str(tmp_path / "empty.txt")}])  # fmt: skip
    with pytest.raises(ValueError, match="is empty"):
        run_recipe("pretrain", tiny_hat, tmp_path / "out", config=config)


@pytest.mark.parametrize("stage, flag", [("sft", "--padding_free"), ("sft", "--packing"), ("dpo", "--padding_free")])
def test_packed_batches_are_refused(tiny_hat, tmp_path, stage, flag):
    with pytest.raises(ValueError, match="padding-free"):
        run_recipe(stage, tiny_hat, tmp_path / "out", flag, "true")


def test_pretrain_refuses_lora(tiny_hat, tmp_path):
    with pytest.raises(ValueError, match="LoRA"):
        run_recipe("pretrain", tiny_hat, tmp_path / "out", "--use_peft", "true")


# ----------------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-2 / ZeRO-3, 2 processes on CPU
# ----------------------------------------------------------------------------------------------------------
def _deepspeed_driver(model: str, out: str, dpo_config: str) -> None:
    """One `accelerate launch`: pretrain (4 steps, checkpoints at 2 and 4), pretrain resumed from checkpoint 2, SFT,
    DPO; writes each run's log history, and the DPO reference weights (gathered), to `out`."""
    import deepspeed

    out = Path(out)
    results = {}
    for name, stage, overrides, config in [
        ("pretrain", "pretrain", [], None),
        ("resumed", "pretrain", ["--resume_from_checkpoint", str(out / "pretrain" / "checkpoint-2")], None),
        ("sft", "sft", [], None),
        ("dpo", "dpo", [], Path(dpo_config)),
    ]:
        trainer = run_recipe(stage, Path(model), out / name, "--ddp_backend", "gloo", *overrides, config=config)
        results[name] = trainer.state.log_history
    ref = trainer.ref_model  # a DeepSpeed engine; under ZeRO-3 its parameters are sharded
    with deepspeed.zero.GatheredParameters(list(ref.parameters())):
        reference = {n: p.detach().clone() for n, p in ref.module.named_parameters()}
    if trainer.accelerator.is_main_process:
        (out / "logs.json").write_text(json.dumps(results))
        torch.save(reference, out / "dpo_reference.pt")
    trainer.accelerator.wait_for_everyone()


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_recipes_under_deepspeed(tiny_hat, tmp_path, zero):
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
        __file__, str(tiny_hat), str(tmp_path), str(dpo_config),
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


if __name__ == "__main__":
    _deepspeed_driver(*sys.argv[1:])
