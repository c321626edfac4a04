"""``python -m lucid`` and ``python -m lucid.demo``: bad arguments and backends give a message, not a traceback."""
import os
import subprocess
import sys

import pytest

from .conftest import GPU_SKIP


def run(*args, **env):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.mark.parametrize("args, text", [
    (["--tokens", "0"], "--tokens: expected a whole number >= 1, got 0"),
    (["--batch", "-1"], "--batch: expected a whole number >= 1, got -1"),
    (["--window", "0"], "--window: expected a whole number >= 1, got 0"),
    (["--layers", "two"], "--layers: expected a whole number >= 1, got 'two'"),
    (["--tolerance", "nan"], "--tolerance: expected a finite number >= 0, got nan"),
    (["--tolerance", "-1"], "--tolerance: expected a finite number >= 0, got -1"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--cache", "ring"], "invalid choice: 'ring'"),
])
def test_demo_rejects_bad_arguments(args, text):
    result = run("lucid.demo", *args)
    assert result.returncode == 2
    assert text in result.stderr and "Traceback" not in result.stderr


def test_lucid_rejects_unknown_flags():
    result = run("lucid", "--verbose")
    assert result.returncode == 2 and "unrecognized arguments: --verbose" in result.stderr


@pytest.mark.parametrize("module", ["lucid", "lucid.demo"])
def test_a_backend_that_cannot_load_prints_why_without_a_traceback(module):
    result = run(module, LUCID_BACKEND="bogus")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: LUCID_BACKEND='bogus' is not a known backend")


@pytest.mark.skipif(GPU_SKIP is None, reason="a GPU is usable here, so --backend cupy works")
def test_cupy_without_a_gpu_prints_the_fix():
    result = run("lucid.demo", "--backend", "cupy")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "pip install" in result.stderr


def test_lucid_self_check_passes():
    result = run("lucid")
    assert result.returncode == 0 and "self-check passed" in result.stdout


def test_demo_off_a_terminal_prints_the_table_and_no_progress_bars():
    result = run("lucid.demo", "--model", "tiny", "--tokens", "3", "--layers", "1")
    assert result.returncode == 0 and "all checks passed" in result.stdout
    assert result.stderr == ""  # tqdm stays silent when stderr is not a terminal


def test_the_demo_names_a_model_path_that_does_not_exist(tmp_path):
    result = run("lucid.demo", "--model", str(tmp_path / "nonexistent"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'nonexistent'}: no such file or directory")
