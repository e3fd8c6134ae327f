"""Shared by the benchmark scripts: the machine description and BENCHMARKS.md section writing.

Each script owns one section of BENCHMARKS.md between `<!-- NAME:start -->` and `<!-- NAME:end -->` and rewrites
only that section, so the scripts can run alone or all together (`python benchmarks/run_all.py`).
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every figure is a ratio against the natural baseline measured in the same run on the same machine.
Regenerate all sections with `python benchmarks/run_all.py` (or one with its own script).
"""


def machine() -> str:
    """One line: CPU model, cores, RAM, Python, torch."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    threads = torch.get_num_threads()
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, torch {torch.__version__} "
        f"({threads} threads), {time.strftime('%Y-%m-%d')}"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or append) the `name` section of BENCHMARKS.md with `body`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
