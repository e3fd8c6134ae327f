"""Run every benchmark and rewrite BENCHMARKS.md (each script replaces its own section).

    PYTHONPATH=. .venv/bin/python benchmarks/run_all.py [--only splitter conversion training generation generation-1b flops]

Each benchmark runs in its own process (one at a time: they time themselves and measure peak RSS), on CPU.
Conversion generates a ~2.7 GB checkpoint in a temporary directory and needs that much free disk twice.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "splitter": ["bench_splitter.py"],
    "conversion": ["bench_conversion.py"],
    "training": ["bench_training.py"],
    "generation": ["bench_generation.py", "--repeats", "3", "--threads", "1"],
    "generation-1b": ["bench_generation.py", "--source", "llama-3.2-1b-shapes", "--repeats", "2", "--threads", "1"],
    "flops": ["bench_flops.py"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1"}
    for name in args.only:
        script, *extra = BENCHMARKS[name]
        t0 = time.time()
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *extra], cwd=HERE.parent, env=env, check=True)
        print(f"== {name}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
