"""Backend selection, the extra operations, and the promise not to import CuPy unless asked."""
import asyncio
import os
import subprocess
import threading
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lucid_backends

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
    name = lucid_backends.load_backend("auto").name
    assert name == ("numpy" if GPU_SKIP else "cupy")


def test_use_backend_restores_the_previous_one():
    before = lucid_backends.get_backend()
    with lucid_backends.use_backend("array_api_strict") as inner:
        assert lucid_backends.get_backend() is inner
    assert lucid_backends.get_backend() is before


def test_use_backend_in_one_thread_does_not_change_another():
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with lucid_backends.use_backend("array_api_strict"):
            entered.set()
            release.wait(10)
            seen["worker"] = lucid_backends.get_backend().name

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait(10)
    seen["main"] = lucid_backends.get_backend().name  # while the worker is inside its block
    release.set()
    thread.join(10)
    assert seen == {"main": "numpy", "worker": "array_api_strict"}


def test_async_tasks_each_keep_their_own_backend():
    async def task(name, ready, go):
        with lucid_backends.use_backend(name):
            ready.set()
            await go.wait()
            return lucid_backends.get_backend().name

    async def main():
        go = asyncio.Event()
        ready = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(task(n, r, go)) for n, r in zip(["array_api_strict", "numpy"], ready)]
        for r in ready:
            await r.wait()
        go.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == ["array_api_strict", "numpy"]


def test_blocks_exited_out_of_order_restore_what_is_still_open():
    base = lucid_backends.get_backend()
    outer = lucid_backends.use_backend("numpy")
    inner = lucid_backends.use_backend("array_api_strict")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the outer block ends first
    assert lucid_backends.get_backend().name == "array_api_strict"  # the inner one is still open
    inner.__exit__(None, None, None)
    assert lucid_backends.get_backend() is base


def test_set_backend_sets_the_default_that_use_backend_overrides():
    previous = lucid_backends.get_backend().name
    try:
        lucid_backends.set_backend("array_api_strict")
        seen = []
        thread = threading.Thread(target=lambda: seen.append(lucid_backends.get_backend().name))
        thread.start()
        thread.join(10)
        assert seen == ["array_api_strict"]  # the default is process-wide
        with lucid_backends.use_backend("numpy"):
            assert lucid_backends.get_backend().name == "numpy"
    finally:
        lucid_backends.set_backend(previous)


def _scatter_case(backend, positions, lo, hi):
    xp = backend.xp
    rng = np.random.default_rng(0)
    buf_host = rng.standard_normal((2, 3, 7, 4)).astype(np.float32)
    values_host = rng.standard_normal((2, 3, np.shape(positions)[-1], 4)).astype(np.float32)
    buf = backend.from_host(buf_host.copy())
    write = backend.prepare_scatter(buf, backend.from_host(values_host),
                                    xp.asarray(backend.from_host(np.asarray(positions))), lo, hi)
    np.testing.assert_array_equal(backend.to_host(buf), buf_host)  # nothing written until the call
    write()
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
    _scatter_case(lucid_backends.load_backend(name), positions, int(pos.min()), int(pos.max()) + 1)


def test_copy_rows_and_dtypes():
    for name in ("numpy", "array_api_strict"):
        backend = lucid_backends.load_backend(name)
        src = backend.from_host(np.arange(12.0).reshape(3, 4))
        dst = backend.xp.zeros((4, 4))
        backend.copy_rows(dst, src, [2, 0, 2, 1])
        np.testing.assert_array_equal(backend.to_host(dst)[:, 0], [8, 0, 8, 4])
    assert str(lucid_backends.load_backend("numpy").dtype("bfloat16")) == "bfloat16"
    assert lucid_backends.load_backend("numpy").dtype("complex256x") is None


def test_host_round_trip_and_synchronize():
    strict = lucid_backends.load_backend("array_api_strict")
    host = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(strict.to_host(strict.from_host(host)), host)
    strict.synchronize()
    assert lucid_backends.backend_of(strict.from_host(host)) is strict
    assert lucid_backends.backend_of([1, 2]) is None


def blas_threads():
    """Threads per call of each BLAS library loaded in this process."""
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_numpy_map_blocks_runs_every_block_and_leaves_blas_threads_as_they_were():
    numpy = lucid_backends.load_backend("numpy")
    before = blas_threads()
    seen = []

    def square(block):
        seen.append(threading.current_thread().name)
        return np.full((64, 64), float(block)) @ np.eye(64)

    out = numpy.map_blocks(square, range(6))
    assert [float(o[0, 0]) for o in out] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # in order
    assert len(seen) == 6
    assert blas_threads() == before


def _blocked_attention_in_child(queue):
    queue.put(_blocked_attention())


def _blocked_attention():
    import lucid
    from lucid.nn import functional

    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 2, 300, 8), dtype=np.float32), rng.standard_normal((1, 2, 300, 8), dtype=np.float32)
    out = functional.scaled_dot_product_attention(lucid.Tensor(q), lucid.Tensor(k), lucid.Tensor(k), is_causal=True)
    return out.numpy()


def test_a_forked_child_gets_its_own_worker_threads(monkeypatch):
    """The parent's pool of threads does not survive fork: the child must not wait on it."""
    import multiprocessing

    from lucid.nn import functional

    monkeypatch.setattr(functional, "SCORES_PER_BLOCK", 1)  # many blocks: the pool is used
    want = _blocked_attention()  # the parent's pool exists from here on
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_blocked_attention_in_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)
        child.join(timeout=60)
    finally:
        child.kill()
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, want)


def test_numpy_parallel_region_holds_blas_at_one_thread_and_restores_it():
    numpy = lucid_backends.load_backend("numpy")
    before = blas_threads()
    with numpy.parallel_region():
        inside = blas_threads()
        assert numpy.map_blocks(lambda b: b + 1, [1, 2, 3]) == [2, 3, 4]
        assert blas_threads() == inside  # a map_blocks inside leaves the region's limit in place
    assert blas_threads() == before
    if len(os.sched_getaffinity(0)) > 1:  # with one core there is no pool and nothing to limit
        assert inside == [1] * len(before)


def test_overlapping_parallel_regions_restore_blas_once_when_the_last_leaves():
    """Two callers whose stays overlap (A enters, B enters, A leaves, B leaves), as two threads
    would: BLAS stays limited until B leaves, then is back. Nested threadpoolctl limits would
    restore the original when A leaves, under B's feet."""
    numpy = lucid_backends.load_backend("numpy")
    before = blas_threads()
    a, b = numpy.parallel_region(), numpy.parallel_region()
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    while_b_stays = blas_threads()
    b.__exit__(None, None, None)
    assert blas_threads() == before
    if len(os.sched_getaffinity(0)) > 1:
        assert while_b_stays == [1] * len(before)


def test_blocks_mapped_from_inside_a_block_run_without_waiting_on_the_pool():
    numpy = lucid_backends.load_backend("numpy")
    out = numpy.map_blocks(lambda outer: numpy.map_blocks(lambda inner: outer * 10 + inner, range(3)), range(4))
    assert out == [[10 * o + i for i in range(3)] for o in range(4)]


@pytest.mark.parametrize("setting, expect", [("1", "sequential"), ("3", "3 workers"), ("zero", "ValueError")])
def test_lucid_num_threads_sets_the_pool(setting, expect):
    code = (
        "import threading, time, numpy as np, lucid_backends\n"
        "b = lucid_backends.load_backend('numpy')\n"
        "def name(i):\n"
        "    time.sleep(0.05)  # long enough that every worker gets a block\n"
        "    return threading.current_thread().name\n"
        "try:\n"
        "    names = b.map_blocks(name, range(12))\n"
        "except ValueError as e:\n"
        "    print('ValueError', e); raise SystemExit\n"
        "workers = {n for n in names if n.startswith('lucid-blocks')}\n"
        "print('sequential' if not workers else f'{len(workers)} workers')\n"
    )
    out = run_python(code, LUCID_NUM_THREADS=setting)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(expect)
    if expect == "ValueError":
        assert "LUCID_NUM_THREADS" in out.stdout and "'zero'" in out.stdout


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_numpy_namespace_overrides_agree_with_array_api_compat(shape, data):
    """The NumPy backend binds reshape, permute_dims, matrix_transpose, flip, max and sum to
    NumPy's methods, and empty to NumPy's: same values, dtypes and shapes as array-api-compat's,
    and views of the input as its are."""
    import array_api_compat.numpy as compat

    from lucid_backends import _numpy_xp as xp

    x = np.arange(int(np.prod(shape))).reshape(shape)
    x = x if data.draw(st.booleans()) else x.transpose()  # a non-contiguous input too

    def agree(ours, theirs):
        np.testing.assert_array_equal(ours, theirs)
        assert ours.shape == theirs.shape and np.shares_memory(ours, x) == np.shares_memory(theirs, x)

    flat = int(np.prod(shape))
    agree(xp.reshape(x, (flat,)), compat.reshape(x, (flat,)))
    axes = tuple(data.draw(st.permutations(range(x.ndim))))
    agree(xp.permute_dims(x, axes), compat.permute_dims(x, axes))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    agree(xp.flip(x, axis=axis), compat.flip(x, axis=axis))
    if x.ndim >= 2:
        agree(xp.matrix_transpose(x), compat.matrix_transpose(x))
    with pytest.raises(ValueError):
        xp.flip(x, axis=x.ndim)
    keepdims, reduced = data.draw(st.booleans()), data.draw(st.one_of(st.none(), st.just(axis), st.just(axes[:2])))
    for ours, theirs in ((xp.max, compat.max), (xp.sum, compat.sum)):
        for values in (x, x.astype(np.float32), x.astype(np.int8)):
            got, want = ours(values, axis=reduced, keepdims=keepdims), theirs(values, axis=reduced, keepdims=keepdims)
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype and got.shape == want.shape
    assert xp.sum(x, dtype=xp.float32).dtype == compat.sum(x, dtype=compat.float32).dtype
    for dtype in (None, xp.float32, xp.int64, xp.bool):
        made, want = xp.empty(tuple(shape), dtype=dtype), compat.empty(tuple(shape), dtype=dtype)
        assert made.dtype == want.dtype and made.shape == want.shape
    assert xp.empty((2,), device="cpu").shape == (2,)
    with pytest.raises(ValueError):
        xp.empty((2,), device="gpu")


@pytest.mark.parametrize("via_exp", [False, True], ids=["exp2", "exp of x ln 2"])
@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-120, 120, width=32), min_size=1, max_size=64),
       shift=st.floats(-20, 20, width=32))
def test_numpy_exp2_shifted_is_two_to_the_power_on_either_path(via_exp, values, shift):
    # On CPUs without AVX-512 the NumPy backend computes float32 2 ** x as exp(x ln 2), NumPy's
    # exp being vectorised there and its exp2 not. Both paths give 2 ** (x - shift) within a
    # few float32 roundings of the exponent (relative error about |x - shift| * 2 ** -24 more
    # than exp's own, as float32 rounds x - shift and x ln 2), overflow to inf, and give 0 for
    # the -inf of a masked score.
    from lucid_backends import _numpy

    backend = lucid_backends.load_backend("numpy")
    x = np.array(values + [-np.inf], dtype=np.float32)
    expected = np.exp2(x.astype(np.float64) - np.float64(np.float32(shift)))
    with pytest.MonkeyPatch.context() as patch, np.errstate(over="ignore"):
        patch.setattr(_numpy, "_EXP2_VIA_EXP", via_exp)
        got = backend.exp2_shifted(x.copy(), np.float32(shift))
    assert got.dtype == np.float32
    normal = (expected > np.finfo(np.float32).tiny) & (expected < np.finfo(np.float32).max / 2)
    exponent = np.abs(np.log2(expected[normal]))
    assert np.all(np.abs(got[normal] - expected[normal]) <= expected[normal] * (3e-7 + 1.2e-7 * exponent))
    assert np.all(got[expected > 2 * np.finfo(np.float32).max] == np.inf)
    assert got[-1] == 0.0


@pytest.mark.parametrize("via_exp", [False, True], ids=["exp2", "exp"])
@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_exp_negated_is_e_to_minus_x_and_leaves_x_alone(via_exp, name):
    # SiLU's exponential, on either of the NumPy backend's paths (and the generic one's), x
    # untouched: exp is within float32's rounding of e ** -x; the exp2 path (AVX-512 CPUs)
    # rounds its argument x / ln 2 first, an error that grows with |x| (1.5e-5 at 80).
    from lucid_backends import _numpy

    backend = lucid_backends.load_backend(name)
    host = np.linspace(-80, 80, 2001, dtype=np.float32)
    x = backend.from_host(host.copy())
    with pytest.MonkeyPatch.context() as patch, np.errstate(over="ignore"):
        patch.setattr(_numpy, "_EXP2_VIA_EXP", via_exp)
        got = backend.to_host(backend.exp_negated(x))
    np.testing.assert_array_equal(backend.to_host(x), host)
    np.testing.assert_allclose(got, np.exp(-host.astype(np.float64)), rtol=2.5e-7 if via_exp or name != "numpy" else 1.5e-5)
