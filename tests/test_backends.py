"""Backend selection, the extra operations, and the promise not to import CuPy unless asked."""
import os
import subprocess
import sys

import numpy as np
import pytest

import backends

from .conftest import GPU_SKIP


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_importing_lucid_does_not_import_cupy():
    result = run_python("import lucid, lucid.nn, sys; lucid.randn(2); assert 'cupy' not in sys.modules")
    assert result.returncode == 0, result.stderr


def test_unknown_backend_fails_with_a_short_clear_message():
    result = run_python("import lucid; lucid.randn(2)", LUCID_BACKEND="bogus")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "LUCID_BACKEND='bogus'" in last and "numpy" in last


@pytest.mark.skipif(GPU_SKIP is None, reason="a GPU is usable here, so LUCID_BACKEND=cupy works")
def test_cupy_without_gpu_names_the_problem_and_the_fix():
    result = run_python("import lucid; lucid.randn(2)", LUCID_BACKEND="cupy")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "LUCID_BACKEND='cupy'" in last and "pip install" in last
    assert "cudaError" not in result.stderr


def test_auto_picks_numpy_without_a_gpu():
    name = backends.load_backend("auto").name
    assert name == ("numpy" if GPU_SKIP else "cupy")


def test_use_backend_restores_the_previous_one():
    before = backends.get_backend()
    with backends.use_backend("array_api_strict") as inner:
        assert backends.get_backend() is inner
    assert backends.get_backend() is before


def _scatter_case(backend, positions, lo, hi):
    xp = backend.xp
    rng = np.random.default_rng(0)
    buf_host = rng.standard_normal((2, 3, 7, 4)).astype(np.float32)
    values_host = rng.standard_normal((2, 3, np.shape(positions)[-1], 4)).astype(np.float32)
    buf = backend.from_host(buf_host.copy())
    backend.scatter(buf, backend.from_host(values_host), xp.asarray(backend.from_host(np.asarray(positions))), lo, hi)
    expected = buf_host.copy()
    pos = np.asarray(positions)
    for b in range(2):
        row = pos if pos.ndim == 1 else pos[b]
        for t, p in enumerate(row):
            expected[b, :, p, :] = values_host[b, :, t, :]
    np.testing.assert_array_equal(backend.to_host(buf), expected)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("positions", [[5, 1, 3], [[0, 6, 2], [4, 3, 1]], [[6], [0]]])
def test_scatter_matches_a_loop(name, positions):
    pos = np.asarray(positions)
    _scatter_case(backends.load_backend(name), positions, int(pos.min()), int(pos.max()) + 1)


def test_host_round_trip_and_synchronize():
    strict = backends.load_backend("array_api_strict")
    host = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(strict.to_host(strict.from_host(host)), host)
    strict.synchronize()
    assert backends.backend_of(strict.from_host(host)) is strict
    assert backends.backend_of([1, 2]) is None
