"""Shared by the conversion tests: a tiny Llama 3.1-shaped model, its checkpoints, and the parity checks.

The fixtures are imported into each test module that uses them (`from llama_fixtures import ...`); pytest finds
them there. A conftest.py here would shadow `tests/conftest.py`'s `from conftest import ...`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hat import HATForCausalLM
from hat.convert.cli import main
from hat.model.layout import additive_mask, causal_mask
from tests.helpers.source_tokenizer import byte_level_bpe

ROOT = Path(__file__).resolve().parents[2]
LLAMA31_ROPE = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
}


def tiny_llama_config(**kwargs) -> LlamaConfig:
    """Llama 3.1-shaped: llama3 RoPE scaling, GQA 4:1, 2 layers, width 64."""
    base = dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_parameters=dict(LLAMA31_ROPE),
        tie_word_embeddings=False,
    )
    return LlamaConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="module")
def llama_dir(tiny_llama, tmp_path_factory) -> Path:
    """The tiny Llama saved by transformers in several shards with an index."""
    path = tmp_path_factory.mktemp("llama") / "src"
    tiny_llama.save_pretrained(path, max_shard_size="60KB")
    byte_level_bpe().save_pretrained(path)  # the teacher files keep the source's tokenizer
    return path


@pytest.fixture
def src(llama_dir, tmp_path) -> Path:
    """A private copy of the sharded source (tests may damage it) at tmp_path/src."""
    return Path(shutil.copytree(llama_dir, tmp_path / "src"))


@pytest.fixture(scope="module")
def converted(llama_dir, tmp_path_factory) -> Path:
    """`convert-llama` run on the sharded tiny Llama, with small output shards."""
    out = tmp_path_factory.mktemp("converted") / "hat"
    assert main(["--input", str(llama_dir), "--output", str(out), "--max-shard-size", "100KB"]) == 0
    return out


def layer_inputs(config: LlamaConfig, rotary, T: int = 7):
    """Hidden states, positions, rotary (cos, sin) and an additive causal mask for one decoder layer."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, T, config.hidden_size, generator=g)  # (B, T, D)
    positions = torch.arange(T).expand(2, T)  # (B, T)
    mask = additive_mask(causal_mask(torch.ones(2, T, dtype=torch.bool)), hidden.dtype)  # (B, 1, T, T)
    return hidden, positions, rotary(hidden, positions), mask


def assert_backbone_bit_identical(hat: HATForCausalLM, llama: LlamaForCausalLM) -> None:
    hidden, positions, (cos, sin), mask = layer_inputs(llama.config, llama.model.rotary_emb)
    hat_cos, hat_sin = hat.model.backbone.rotary_emb(hidden, positions)
    assert torch.equal(hat_cos, cos) and torch.equal(hat_sin, sin)
    assert len(hat.model.backbone.layers) == len(llama.model.layers)
    with torch.no_grad():
        for i, (ours, theirs) in enumerate(zip(hat.model.backbone.layers, llama.model.layers)):
            kwargs = dict(attention_mask=mask, position_ids=positions, position_embeddings=(cos, sin))
            assert torch.equal(ours(hidden, **kwargs), theirs(hidden, **kwargs)), f"backbone layer {i} differs"


def assert_nothing_left(parent: Path, expected: set[str]) -> None:
    """No output and no temporary dir beside it: only `expected` entries remain in `parent`."""
    assert set(os.listdir(parent)) == expected


def run_failing(argv: list[str], capsys, match: str) -> str:
    """`convert-llama argv` exits 1 with one `convert-llama: error:` line containing `match`; returns stderr."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "convert-llama: error:" in err and match in err, err
    assert "Traceback" not in err, err
    return err


def last_shard(src: Path) -> Path:
    return sorted(src.glob("model-*.safetensors"))[-1]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`python -m hat.convert argv` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "hat.convert", *argv], capture_output=True, text=True,
                          env=child_env(), cwd=ROOT, timeout=300, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Real processes stopped mid-conversion
# ----------------------------------------------------------------------------------------------------------
# convert-llama that stops after writing its first output shard (the temporary output exists, the lock is held)
# and says so on stdout, until a signal ends it.
PAUSING_CHILD = textwrap.dedent("""
    import sys, time
    import hat.convert.checkpoint as checkpoint
    from hat.convert.cli import main

    real = checkpoint.write_shard
    paused = []

    def write_then_pause(*args, **kwargs):
        real(*args, **kwargs)
        if not paused:
            paused.append(True)
            print("PAUSED", flush=True)
            time.sleep(600)

    checkpoint.write_shard = write_then_pause
    sys.exit(main(sys.argv[1:]))
""")


class PausedConversion:
    """`convert-llama argv` in a child process, stopped with its first output shard written."""

    def __init__(self, argv: list[str], log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-c", PAUSING_CHILD, *argv], stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True, env=child_env(), cwd=ROOT)
        self.watchdog = threading.Timer(600, self.proc.kill)  # never outlive a broken test
        self.watchdog.start()
        lines = []  # libraries may print to stdout first
        while not lines or lines[-1] not in ("PAUSED\n", ""):
            lines.append(self.proc.stdout.readline())
        if lines[-1] != "PAUSED\n":
            self.proc.kill()
            raise AssertionError(f"the conversion did not get to its first shard: {lines}\n{log.read_text()}")

    def stop(self, signum: int) -> tuple[int, str]:
        """Send `signum`; (exit code, stderr) once the child has ended."""
        self.proc.send_signal(signum)
        rc = self.proc.wait(timeout=120)
        self.watchdog.cancel()
        self.proc.stdout.close()
        return rc, self.log.read_text()


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under `out` (teacher/ included), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    """The hidden entries of `parent` (temporary directories, lock files)."""
    return sorted(n for n in os.listdir(parent) if n.startswith("."))
