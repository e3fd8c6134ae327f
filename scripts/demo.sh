#!/usr/bin/env bash
# Set up .venv (if needed) and run the main job on the embedded default: SmolLM2-135M-Instruct -> HAT ->
# short stage-1 training on the bundled corpus -> bits per byte before/after, samples, outputs/demo/report.md.
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python scripts/demo.py "$@"
