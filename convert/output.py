"""The output directory of a conversion: one writer at a time, nothing partial left where the user looks
(ARCHITECTURE.md §6).

    check_output(dst, overwrite)            # not a file; empty, or `overwrite`
    with OutputDir(dst, overwrite) as out:  # lock `.<name>.lock` beside `dst`; leftovers of killed runs removed
        out.check_free_disk(needed, what)   # after the leftovers are gone
        tmp = out.tempdir("tmp")            # `.<name>.tmp-*` beside `dst`, removed unless committed
        ...
        out.commit(tmp)                     # the finished directory -> `dst`

Everything is written into hidden directories beside the target (`.<name>.tmp-*`, and for a GGUF source the
temporary HF checkpoint `.<name>.gguf-*`), and the finished one is moved into place. Any error, Ctrl-C (SIGINT),
SIGTERM or SIGHUP removes them. A run killed outright (`kill -9`, power loss) cannot clean up: the next run into
the same target finds its leftovers under the lock and removes them, saying so, or puts back a previous output that
an `--overwrite` had moved aside (`.<name>.old-*`) just before it was killed.

The lock (`fcntl.flock` on `.<name>.lock`) is released by the kernel when its holder dies, however it dies, so a
stale lock never blocks; a second conversion into a target that is being written refuses at once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from .table import ConversionError

logger = logging.getLogger("hat.convert")

_KINDS = ("tmp", "gguf", "old")  # the hidden directories a conversion writes beside its target


class Interrupted(KeyboardInterrupt):
    """A conversion stopped by a signal (SIGTERM, SIGHUP; SIGINT is Python's own `KeyboardInterrupt`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def human_bytes(n: float) -> str:
    """`1234567` -> `1.2 MB` (powers of 1000, as `--max-shard-size` reads them)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_output(dst: Path, overwrite: bool) -> None:
    """Raises `ConversionError` if `dst` is a file, or a non-empty directory and `overwrite` is off."""
    if dst.is_file() or dst.is_symlink():
        raise ConversionError(f"{dst}: output path exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"{dst}: output directory exists and is not empty (pass --overwrite to replace it)")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_free_disk(dst: Path, needed: int, what: str) -> None:
    """Raises `ConversionError` if the filesystem that will hold `dst` has less than `needed` bytes free."""
    probe = _existing(dst)
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ConversionError(
            f"not enough free disk space for {what} at {probe}: needs ~{human_bytes(needed)}, {human_bytes(free)} free"
        )


def check_file_size_limit(largest_file: int, what: str) -> None:
    """Raises `ConversionError` if this process may not write a file of `largest_file` bytes (`ulimit -f`)."""
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and largest_file > limit:
        raise ConversionError(
            f"the file-size limit of this process (ulimit -f) is {human_bytes(limit)}; {what} is "
            f"{human_bytes(largest_file)} (pass a smaller --max-shard-size or raise the limit)"
        )


def os_error_message(e: OSError, dst: Path, needed: int | None = None) -> str:
    """One line for an `OSError` met while writing the output of `dst`: the path, what failed, what was needed."""
    parent = Path(os.path.abspath(dst)).parent
    path = e.filename or parent
    if e.filename and not Path(os.path.abspath(e.filename)).is_relative_to(parent):
        return f"{path}: {e.strerror or e}"  # the source, not the output
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(_existing(Path(path))).free
        need = f"the output needs ~{human_bytes(needed)}, " if needed else ""
        return f"{path}: no space left on the device ({need}{human_bytes(free)} free now)"
    if e.errno == errno.EFBIG:
        return f"{path}: file too large for this filesystem or the file-size limit (ulimit -f); pass a smaller --max-shard-size"
    reason = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system"}
    return (f"{path}: cannot write here: {reason.get(e.errno, e.strerror or e)} "
            f"(convert-llama needs to create files in {parent})")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class OutputDir:
    """The one conversion writing into `dst`: lock, leftovers of killed runs, temporary directories, commit.

    Args:
        dst (`Path`): the output directory.
        overwrite (`bool`): an existing non-empty `dst` may be replaced (checked again under the lock).

    Raises:
        ConversionError: another conversion holds the lock, `dst` is not usable (see `check_output`), or the parent
            directory cannot be created or written.
    """

    def __init__(self, dst: Path, overwrite: bool):
        self.dst = Path(dst)
        self.overwrite = overwrite
        # Beside the target, named after it (`out/`, `out/.` and `./out` are one target).
        absolute = Path(os.path.abspath(dst))
        self.parent, self.name = absolute.parent, absolute.name
        self.lock_path = self.parent / f".{self.name}.lock"
        self._temps: list[Path] = []
        self._made: list[Path] = []
        self._fd: int | None = None
        self._handlers: dict[int, object] = {}
        self.committed = False
        self.needed = 0  # bytes this conversion said it would write (`check_free_disk`)

    # ------------------------------------------------------------------ enter / exit
    def __enter__(self) -> OutputDir:
        try:
            self._make_parents()
            self._lock()
        except OSError as e:
            self.__exit__(None, None, None)
            raise ConversionError(os_error_message(e, self.dst)) from e
        try:
            self._handle_signals()
            self.remove_leftovers()
            check_output(self.dst, self.overwrite)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:  # a second Ctrl-C must not interrupt the clean-up
            signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for path in self._temps:
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    if exc_type is not None:
                        logger.warning("removed the unfinished %s", path)
            self._release()
            if not self.committed:
                for made in reversed(self._made):
                    try:
                        made.rmdir()
                    except OSError:
                        break
        finally:
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)
            if in_main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        if isinstance(exc, OSError):  # a full disk, a file-size limit, an unwritable directory: one line, no traceback
            raise ConversionError(os_error_message(exc, self.dst, self.needed)) from exc

    # ------------------------------------------------------------------ pieces
    def _make_parents(self) -> None:
        missing = []
        parent = self.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for path in reversed(missing):
            path.mkdir()
            self._made.append(path)

    def _lock(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ConversionError(
                    f"{self.dst}: another convert-llama (pid {holder}) is writing this output right now "
                    f"(lock {self.lock_path}); wait for it to finish or stop it"
                ) from None
            # The holder before us may have removed the lock file after we opened it: lock the file that is there.
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None

    def _handle_signals(self) -> None:
        """SIGTERM and SIGHUP raise `Interrupted` (as Ctrl-C raises `KeyboardInterrupt`), so the clean-up runs.
        Only in the main thread, and only where the program has not installed a handler of its own."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum, frame):
            raise Interrupted(signum)

        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                self._handlers[signum] = signal.signal(signum, interrupt)

    def leftovers(self) -> list[Path]:
        """The hidden directories of earlier runs into `dst` (call under the lock: nobody else writes them)."""
        prefixes = tuple(f".{self.name}.{kind}-" for kind in _KINDS)
        parent = self.parent
        return sorted(p for p in (parent / n for n in os.listdir(parent) if n.startswith(prefixes)) if p not in self._temps)

    def remove_leftovers(self) -> None:
        """Remove what a killed run left beside `dst`; put back a previous output that it had moved aside."""
        for path in self.leftovers():
            moved_aside = path / self.name
            if path.name.startswith(f".{self.name}.old-") and moved_aside.is_dir() and not self.dst.exists():
                os.replace(moved_aside, self.dst)
                logger.warning("put back %s: an interrupted --overwrite had moved it aside to %s", self.dst, path)
            size = _size(path)
            shutil.rmtree(path)
            logger.warning("removed %s (%s), left by an interrupted conversion into %s", path, human_bytes(size),
                           self.dst)

    def check_free_disk(self, needed: int, what: str) -> None:
        """`check_free_disk` (after the leftovers of killed runs are gone), remembering `needed` for the messages."""
        check_free_disk(self.dst, needed, what)
        self.needed += needed

    def tempdir(self, kind: str) -> Path:
        """A new hidden directory `.<name>.<kind>-*` beside `dst`, with ordinary permissions, removed on exit unless
        committed."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        try:
            path = Path(tempfile.mkdtemp(prefix=f".{self.name}.{kind}-", dir=self.parent))
        except OSError as e:
            raise ConversionError(os_error_message(e, self.dst)) from e
        self._temps.append(path)
        umask = os.umask(0)
        os.umask(umask)
        path.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
        return path

    def commit(self, tmp: Path) -> None:
        """Move the finished `tmp` to `dst`; an existing `dst` is moved aside first and removed only after."""
        dst, old = self.parent / self.name, None
        if dst.exists():
            old = self.tempdir("old")
            os.replace(dst, old / self.name)
        try:
            os.replace(tmp, dst)
        except BaseException:
            if old is not None:
                os.replace(old / self.name, dst)
            raise
        self.committed = True
