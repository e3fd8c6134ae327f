"""The output directory of a conversion: checked before, written as a temporary directory beside it, moved into
place when complete (ARCHITECTURE.md §6).

    check_output(dst, overwrite)       # not a file; empty, or `overwrite`
    check_free_disk(dst, needed, what) # before anything is written
    replace_dir(tmp, dst)              # the finished temporary directory -> `dst`
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .table import ConversionError


def check_output(dst: Path, overwrite: bool) -> None:
    """Raises `ConversionError` if `dst` is a file, or a non-empty directory and `overwrite` is off."""
    if dst.is_file() or dst.is_symlink():
        raise ConversionError(f"{dst}: output path exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"{dst}: output directory exists and is not empty (pass --overwrite to replace it)")


def check_free_disk(dst: Path, needed: int, what: str) -> None:
    """Raises `ConversionError` if the filesystem that will hold `dst` has less than `needed` bytes free."""
    probe = dst.absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ConversionError(
            f"not enough free disk space for {what} at {probe}: needs ~{needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free"
        )


def replace_dir(tmp: Path, dst: Path) -> None:
    """Move the finished `tmp` to `dst`; an existing `dst` is moved aside first and removed only after."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        if old is not None:
            os.replace(old / dst.name, dst)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
