"""Real out-of-memory faults: a call that fails to allocate leaves the cache exactly as it was.

Each case runs in a subprocess whose address space is capped (``RLIMIT_AS``) a little above
what it already uses, so the cache's allocation really fails inside NumPy, as it would on a
full machine. The sizes asked for stay well below the machine's memory, so they are out-of-
memory faults, not absurd requests (those are a ValueError, tested in test_cache_contract).
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")

PRELUDE = textwrap.dedent("""
    import resource
    import numpy as np
    import lucid
    import lucid.nn as nn
    from tests.helpers import assert_unchanged, snapshot

    def fails_with_memory_error(call, headroom=64 * 2**20):
        # Run call with the address space capped headroom bytes above what is in use now.
        with open("/proc/self/status") as status:
            used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (used + headroom, resource.RLIM_INFINITY))
        try:
            call()
        except MemoryError:
            return True
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        return False

    lucid.manual_seed(0)
    total = lucid.get_backend().total_memory()
""")


def run_case(body):
    code = PRELUDE + textwrap.dedent(body) + "\nprint('case passed')\n"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "case passed" in result.stdout, result.stdout + result.stderr


def test_growth_that_runs_out_of_memory_keeps_every_token():
    run_case("""
        cache = nn.DynamicKVCache()
        cache.update(lucid.randn(1, 8, 300, 64), lucid.randn(1, 8, 300, 64), 0)
        cache.update(lucid.randn(1, 8, 5, 64), lucid.randn(1, 8, 5, 64), 1)
        before = snapshot(cache)
        far = total // 8 // (2 * 8 * 64 * 4)  # a position whose growth needs about total / 8 bytes
        step = lucid.randn(1, 8, 1, 64)
        assert fails_with_memory_error(lambda: cache.update(step, step, 0, cache_position=far))
        assert fails_with_memory_error(lambda: cache.update(lucid.zeros(1, 8, far, 64), lucid.zeros(1, 8, far, 64), 1))
        # Room for the new key buffer (100 MB) but not for the value buffer as well.
        near = 100 * 2**20 * 2 // 3 // (8 * 64 * 4)
        assert fails_with_memory_error(lambda: cache.update(step, step, 0, cache_position=near), 150 * 2**20)
        assert_unchanged(before, cache)
        cache.update(step, step, 0)  # and the cache still works
        assert cache.get_seq_length(0) == 301
    """)


def test_static_first_write_that_runs_out_of_memory_leaves_the_layer_unwritten():
    run_case("""
        cache = nn.StaticKVCache(max_cache_len=total // 8 // (2 * 8 * 64 * 4), num_layers=2)
        step = lucid.randn(1, 8, 1, 64)
        assert fails_with_memory_error(lambda: cache.update(step, step, 0))
        assert cache.get(0) is None and cache.nbytes() == 0 and cache.batch_size() is None
    """)


def test_repeat_that_runs_out_of_memory_on_the_second_layer_changes_no_layer():
    run_case("""
        cache = nn.DynamicKVCache()
        cache.update(lucid.randn(1, 8, 100, 64), lucid.randn(1, 8, 100, 64), 0)  # small
        big = lucid.zeros(1, 8, 20_000, 64)
        cache.update(big, big, 1)  # about 120 MB with its headroom
        before = snapshot(cache)
        assert fails_with_memory_error(lambda: cache.batch_repeat_interleave(4))
        assert fails_with_memory_error(lambda: cache.reorder_cache([0, 0, 0, 0]))
        assert_unchanged(before, cache)
        assert cache.batch_size() == 1
    """)


def test_in_place_reorder_that_runs_out_of_memory_copying_rows_aside_changes_nothing():
    # A reorder rearranges rows in place (here in a static cache with a reserved row); a swap
    # first copies one row aside (about 20 MB for the keys, as much for the values): room for
    # the keys' copy only.
    run_case("""
        cache = nn.StaticKVCache(max_cache_len=10_000, num_layers=2, max_batch_size=3)
        for layer in range(2):
            cache.update(lucid.randn(2, 8, 10_000, 64), lucid.randn(2, 8, 10_000, 64), layer)
        before = snapshot(cache)
        assert fails_with_memory_error(lambda: cache.reorder_cache([1, 0]), 30 * 2**20)
        assert_unchanged(before, cache)
        cache.reorder_cache([1, 0])  # without the cap it works
        np.testing.assert_array_equal(cache.get(1)[0].numpy()[0], before[2][0][1])
    """)


def test_encoder_decoder_batch_op_that_fails_in_either_cache_changes_neither():
    run_case("""
        for big_side in ("self", "cross"):
            cache = nn.EncoderDecoderCache()
            small, big = lucid.randn(2, 2, 10, 8), lucid.zeros(2, 8, 20_000, 64)
            cache.update(*((big, big) if big_side == "self" else (small, small)), 0)
            cache.update(*((small, small) if big_side == "self" else (big, big)), 0, is_cross_attention=True)
            self_before = snapshot(cache.self_attention_cache, 1)
            cross_before = snapshot(cache.cross_attention_cache, 1)
            assert fails_with_memory_error(lambda: cache.batch_repeat_interleave(3))
            assert_unchanged(self_before, cache.self_attention_cache, 1)
            assert_unchanged(cross_before, cache.cross_attention_cache, 1)
    """)


def test_positions_write_that_runs_out_of_memory_between_keys_and_values_changes_nothing():
    """On array-api-strict, scattered positions rebuild the touched region of the keys and of
    the values. The values' region is 8x the keys' (head sizes 8 and 64): the memory cap leaves
    room for the keys' work but not for the values', so a write that changed the keys first
    would leave them changed. (NumPy and CuPy write such tokens in place, needing no memory.)"""
    run_case("""
        lucid.set_backend("array_api_strict")
        n = 40_000
        cache = nn.DynamicKVCache()
        cache.update(lucid.randn(1, 8, n, 8), lucid.randn(1, 8, n, 64), 0)
        before = snapshot(cache)
        k, v = lucid.randn(1, 8, 2, 8), lucid.randn(1, 8, 2, 64)
        assert fails_with_memory_error(lambda: cache.update(k, v, 0, cache_position=[n - 1, 0]), 40 * 2**20)
        assert_unchanged(before, cache)
        cache.update(k, v, 0, cache_position=[n - 1, 0])  # without the cap it works
        assert cache.get_seq_length(0) == n
    """)
