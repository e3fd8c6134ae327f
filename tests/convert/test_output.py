"""The output directory: one writer at a time, never a partial output where the user looks, a clear line when it
cannot be written. The interruption and lock tests run real `convert-llama` processes and stop them mid-write."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
from llama_fixtures import (  # noqa: F401 (fixtures)
    ROOT,
    PausedConversion,
    assert_nothing_left,
    child_env,
    hidden,
    llama_dir,
    run_cli,
    run_failing,
    snapshot,
    src,
    tiny_llama,
)

import hat.convert.safetensors_io
from hat import HATForCausalLM
from hat.convert.cli import main
from hat.convert.gguf_io import default_source


@pytest.fixture
def logs(tmp_path):
    path = tmp_path / "logs"
    path.mkdir()
    return path


def assert_converted(out) -> None:
    model, info = HATForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


# ----------------------------------------------------------------------------------------------------------
# Existing output, not enough disk
# ----------------------------------------------------------------------------------------------------------
def test_output_not_empty(src, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("keep me")
    run_failing(["--input", str(src), "--output", str(out)], capsys, "exists and is not empty")
    assert os.listdir(out) == ["stale.txt"]
    assert_nothing_left(tmp_path, {"src", "out"})

    assert main(["--input", str(src), "--output", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()
    assert_nothing_left(tmp_path, {"src", "out"})


def test_not_enough_disk(src, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    err = run_failing(["--input", str(src), "--output", str(tmp_path / "out")], capsys, "not enough free disk space")
    assert "needs ~5.1 MB, 1.0 KB free" in err  # the HAT (4.8 MB) and the teacher files (0.3 MB)
    assert_nothing_left(tmp_path, {"src"})


def test_parents_made_for_a_failed_run_are_removed(src, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    run_failing(["--input", str(src), "--output", str(tmp_path / "a" / "b" / "out")], capsys, "not enough free disk")
    assert_nothing_left(tmp_path, {"src"})


# ----------------------------------------------------------------------------------------------------------
# Interrupted: Ctrl-C, SIGTERM, kill -9
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_write_removes_the_partial_output(src, tmp_path, logs, signum):  # noqa: F811
    out = tmp_path / "out"
    child = PausedConversion(["--input", str(src), "--output", str(out)], logs / "err.txt")
    partial = [n for n in hidden(tmp_path) if n.startswith(".out.tmp-")]
    assert len(partial) == 1 and any((tmp_path / partial[0]).iterdir())  # the test stops a real, half-done write
    assert ".out.lock" in hidden(tmp_path)
    rc, err = child.stop(signum)
    assert rc == 128 + signum, err
    assert f"convert-llama: removed the unfinished {tmp_path / partial[0]}" in err
    assert f"convert-llama: interrupted by {signal.Signals(signum).name}" in err
    assert "Traceback" not in err
    assert_nothing_left(tmp_path, {"src", "logs"})


@pytest.mark.slow
def test_leftover_of_a_killed_run_is_removed_by_the_next(src, tmp_path, logs):  # noqa: F811
    out = tmp_path / "out"
    child = PausedConversion(["--input", str(src), "--output", str(out)], logs / "err.txt")
    rc, _ = child.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    (leftover,) = [n for n in hidden(tmp_path) if n.startswith(".out.tmp-")]
    assert hidden(tmp_path) == [".out.lock", leftover]  # what kill -9 leaves: the lock file holds no lock now

    rerun = run_cli(["--input", str(src), "--output", str(out)])
    assert rerun.returncode == 0, rerun.stderr
    assert f"convert-llama: removed {tmp_path / leftover} (" in rerun.stderr
    assert "left by an interrupted conversion" in rerun.stderr
    assert_nothing_left(tmp_path, {"src", "logs", "out"})
    assert_converted(out)


@pytest.mark.slow
def test_overwrite_killed_mid_write_keeps_the_old_output(src, tmp_path, logs):  # noqa: F811
    out = tmp_path / "out"
    assert run_cli(["--input", str(src), "--output", str(out), "--seed", "1"]).returncode == 0
    before = snapshot(out)
    child = PausedConversion(["--input", str(src), "--output", str(out), "--overwrite"], logs / "err.txt")
    child.stop(signal.SIGKILL)
    assert snapshot(out) == before
    rerun = run_cli(["--input", str(src), "--output", str(out), "--overwrite"])
    assert rerun.returncode == 0 and "left by an interrupted conversion" in rerun.stderr, rerun.stderr
    assert_nothing_left(tmp_path, {"src", "logs", "out"})
    assert snapshot(out) != before  # seed 0 now


def test_output_inside_the_input(src, capsys):  # noqa: F811
    assert main(["--input", str(src), "--output", str(src / "hat")]) == 0
    assert (src / "hat" / "config.json").is_file() and not hidden(src)


def test_overwrite_killed_between_the_two_renames_puts_the_old_output_back(src, tmp_path, capsys):  # noqa: F811
    """A run with --overwrite moves the old output aside, then moves the new one in. Killed in between, the old
    output is in `.out.old-*`: the next run puts it back instead of deleting it."""
    out = tmp_path / "out"
    assert main(["--input", str(src), "--output", str(out)]) == 0
    before = snapshot(out)
    aside, partial = tmp_path / ".out.old-x1", tmp_path / ".out.tmp-x2"
    aside.mkdir()
    os.replace(out, aside / "out")
    partial.mkdir()
    (partial / "model-00001-of-00002.safetensors").write_bytes(b"half")
    capsys.readouterr()

    err = run_failing(["--input", str(src), "--output", str(out)], capsys, "exists and is not empty")
    assert f"convert-llama: put back {out}: an interrupted --overwrite had moved it aside to {aside}" in err
    assert f"convert-llama: removed {partial} (4 B)" in err
    assert snapshot(out) == before
    assert_nothing_left(tmp_path, {"src", "out"})


@pytest.mark.slow
def test_gguf_leftovers_of_a_killed_run_are_removed(src, tmp_path, logs):  # noqa: F811
    """The GGUF path writes a temporary HF checkpoint (`.out.gguf-*`) and the output (`.out.tmp-*`)."""
    out = tmp_path / "out"
    child = PausedConversion(["--input", str(default_source()), "--output", str(out)], logs / "err.txt")
    child.stop(signal.SIGKILL)
    leftovers = [n for n in hidden(tmp_path) if n != ".out.lock"]
    assert sorted(n.split("-")[0] for n in leftovers) == [".out.gguf", ".out.tmp"]

    rerun = run_cli(["--input", str(src), "--output", str(out)])
    assert rerun.returncode == 0, rerun.stderr
    for name in leftovers:
        assert f"convert-llama: removed {tmp_path / name} (" in rerun.stderr
    assert_nothing_left(tmp_path, {"src", "logs", "out"})


# ----------------------------------------------------------------------------------------------------------
# One conversion at a time
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_second_conversion_into_the_same_target_refuses(src, tmp_path, logs):  # noqa: F811
    out = tmp_path / "out"
    first = PausedConversion(["--input", str(src), "--output", str(out)], logs / "err.txt")
    (partial,) = [n for n in hidden(tmp_path) if n.startswith(".out.tmp-")]
    for extra in ([], ["--overwrite"]):
        second = run_cli(["--input", str(src), "--output", str(out), *extra])
        assert second.returncode == 1
        assert (f"convert-llama: error: {out}: another convert-llama (pid {first.proc.pid}) is writing this output "
                "right now") in second.stderr
        assert second.stderr.count("\n") == 1, second.stderr  # refused at once: one line, no progress bar
        assert (tmp_path / partial).is_dir() and not out.exists()  # the first run's work is untouched
    rc, err = first.stop(signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, err
    assert_nothing_left(tmp_path, {"src", "logs"})


def test_lock_released_after_each_run(src, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    assert main(["--input", str(src), "--output", str(out)]) == 0
    assert main(["--input", str(src), "--output", str(out), "--overwrite"]) == 0
    assert_nothing_left(tmp_path, {"src", "out"})


# ----------------------------------------------------------------------------------------------------------
# Full disk, file-size limit, unwritable directory: one line naming the path and what was needed
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, match", [
    (errno.ENOSPC, "no space left on the device (the output needs ~"),
    (errno.EFBIG, "file too large for this filesystem or the file-size limit (ulimit -f); pass a smaller "
                  "--max-shard-size"),
    (errno.EACCES, "cannot write here: permission denied (convert-llama needs to create files in"),
    (errno.EIO, "cannot write here: Input/output error"),
])
def test_write_error_mid_write(src, tmp_path, capsys, monkeypatch, code, match):  # noqa: F811
    real, calls = hat.convert.safetensors_io._write_all, []

    def failing(f, data):
        calls.append(f.name)
        if len(calls) == 3:
            raise OSError(code, os.strerror(code))
        real(f, data)

    monkeypatch.setattr(hat.convert.safetensors_io, "_write_all", failing)
    err = run_failing(["--input", str(src), "--output", str(tmp_path / "out"), "--max-shard-size", "100KB"],
                      capsys, match)
    partial = os.path.dirname(calls[-1])
    assert f"convert-llama: error: {calls[-1]}: " in err  # the file being written
    assert f"convert-llama: removed the unfinished {partial}" in err
    assert_nothing_left(tmp_path, {"src"})


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_output_where_nothing_can_be_created(src, capsys):  # noqa: F811
    err = run_failing(["--input", str(src), "--output", "/proc/hat-out"], capsys, "cannot write here")
    assert "/proc/.hat-out.lock: cannot write here: No such file or directory" in err
    assert "convert-llama needs to create files in /proc" in err
    assert not os.path.exists("/proc/hat-out")


@pytest.mark.slow
def test_file_size_limit(src, tmp_path):  # noqa: F811
    """`ulimit -f` in a real process: refused before writing, with the limit, the size needed and the way out."""
    limit = 200_000

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    run = run_cli(["--input", str(src), "--output", str(out)], preexec_fn=limited)
    assert run.returncode == 1
    assert ("convert-llama: error: the file-size limit of this process (ulimit -f) is 200.0 KB; the largest output "
            "file is ") in run.stderr
    assert "(pass a smaller --max-shard-size or raise the limit)" in run.stderr and "Traceback" not in run.stderr
    assert_nothing_left(tmp_path, {"src"})

    run = run_cli(["--input", str(src), "--output", str(out), "--max-shard-size", "150KB"], preexec_fn=limited)
    assert run.returncode == 0, run.stderr
    assert_converted(out)


def unshare_available() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_in_small_fs(mount, options: str, child_code: str, argv: list[str]) -> tuple[subprocess.CompletedProcess,
                                                                                     str]:
    """Run `python -c child_code argv` with a fresh tmpfs (`options`) at `mount`, in a private mount namespace
    (no privileges needed); returns the run and what is left in the tmpfs afterwards."""
    script = ('mount -t tmpfs -o "$1" none "$0" && shift && "$@"; rc=$?; '
              'echo "LEFT:$(ls -A "$0" | tr "\\n" " ")"; exit $rc')
    run = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(mount), options, sys.executable, "-c",
                          child_code, *argv], capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=300)
    left = run.stdout.rsplit("LEFT:", 1)[-1].split()
    return run, left


CLI_CHILD = "import sys; from hat.convert.cli import main; sys.exit(main(sys.argv[1:]))"
# Another process fills the disk after the check: the free-space check is told there is room.
FILLED_LATER_CHILD = (
    "import shutil, sys; from hat.convert.cli import main\n"
    "shutil.disk_usage = lambda path: shutil._ntuple_diskusage(10**12, 0, 10**12)\n"
    "sys.exit(main(sys.argv[1:]))"
)
needs_unshare = pytest.mark.skipif(not unshare_available(), reason="needs unprivileged mount namespaces (unshare -rm)")


@pytest.mark.slow
@needs_unshare
def test_disk_full_on_a_small_filesystem(src, tmp_path):  # noqa: F811
    small = tmp_path / "small"
    small.mkdir()
    argv = ["--input", str(src), "--output", str(small / "out")]
    run, left = run_in_small_fs(small, "size=300k", CLI_CHILD, argv)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"convert-llama: error: not enough free disk space for the output {small / 'out'} at {small}" in run.stderr
    assert left == []

    run, left = run_in_small_fs(small, "size=300k", FILLED_LATER_CHILD, argv)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"convert-llama: error: {small}/.out.tmp-" in run.stderr
    assert ": no space left on the device (the output needs ~" in run.stderr
    assert "convert-llama: removed the unfinished" in run.stderr
    assert left == []


# What kill -9 leaves on a small disk: 2 MB of a temporary output.
LEFTOVER_CHILD = (
    "import os, sys; from hat.convert.cli import main\n"
    "out = sys.argv[sys.argv.index('--output') + 1]\n"
    "leftover = os.path.join(os.path.dirname(out), '.out.tmp-killed')\n"
    "os.mkdir(leftover); open(os.path.join(leftover, 'model-00001-of-00001.safetensors'), 'wb').write(b'x' * 2_000_000)\n"
    "sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.slow
@needs_unshare
def test_retry_after_kill_on_a_small_disk(src, tmp_path):  # noqa: F811
    """The leftover is removed (and named) before the free-space check, so the retry fits (6 MB: the output
    needs ~5.1 MB, with the 2 MB leftover it would not)."""
    small = tmp_path / "small"
    small.mkdir()
    run, left = run_in_small_fs(small, "size=6m", LEFTOVER_CHILD, ["--input", str(src), "--output", str(small / "out")])
    assert run.returncode == 0, run.stderr
    assert f"convert-llama: removed {small}/.out.tmp-killed (2.0 MB), left by an interrupted conversion" in run.stderr
    assert left == ["out"]


@pytest.mark.slow
@needs_unshare
def test_read_only_parent(src, tmp_path):  # noqa: F811
    ro = tmp_path / "ro"
    ro.mkdir()
    for out in (ro / "out", ro / "sub" / "out"):
        run, left = run_in_small_fs(ro, "ro", CLI_CHILD, ["--input", str(src), "--output", str(out)])
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert ": cannot write here: read-only file system (convert-llama needs to create files in" in run.stderr
        assert run.stderr.count("convert-llama:") == 1
        assert left == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_permission_denied(src, tmp_path, capsys):  # noqa: F811
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    run_failing(["--input", str(src), "--output", str(locked / "out")], capsys,
                f"cannot write here: permission denied (convert-llama needs to create files in {locked}")
    assert os.listdir(locked) == []
