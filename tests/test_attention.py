"""scaled_dot_product_attention against a direct NumPy formula."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lucid
from lucid.nn.functional import attention_mask, scaled_dot_product_attention, softmax

from .helpers import on_backend


def reference(q, k, v, mask=None, causal=False, scale=None):
    """Per head, per query: the textbook formula with explicit loops over heads."""
    batch, q_heads, q_len, dim = q.shape
    group = q_heads // k.shape[1]
    scale = 1 / np.sqrt(dim) if scale is None else scale
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for b in range(batch):
        for h in range(q_heads):
            scores = q[b, h] @ k[b, h // group].T * scale
            allowed = np.ones_like(scores, dtype=bool)
            if causal:
                allowed &= np.arange(k.shape[2])[None, :] <= np.arange(q_len)[:, None] + k.shape[2] - q_len
            if mask is not None:
                m = np.broadcast_to(mask, (batch, q_heads) + scores.shape)[b, h]
                if m.dtype == bool:
                    allowed &= m
                else:
                    scores = scores + m
            scores = np.where(allowed, scores, -np.inf)
            blind = ~allowed.any(axis=-1, keepdims=True)  # rows that may attend nothing come out zero
            scores = np.where(blind, 0.0, scores)
            weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
            out[b, h] = np.where(blind, 0.0, weights / weights.sum(axis=-1, keepdims=True) @ v[b, h // group])
    return out


def data(q_heads=4, kv_heads=2, q_len=3, k_len=5, dim=8, dv=6):
    rng = np.random.default_rng(1)
    return (rng.standard_normal((2, q_heads, q_len, dim)).astype(np.float32),
            rng.standard_normal((2, kv_heads, k_len, dim)).astype(np.float32),
            rng.standard_normal((2, kv_heads, k_len, dv)).astype(np.float32))


@pytest.fixture(params=["queries first", "keys first, tiled", "keys first, bounded", "keys first, always shifted",
                        "causal blocks"])
def layout(request, monkeypatch):
    """Both layouts of a block's scores, whatever the block's size and head dimension; keys
    first in tiles of a few keys with probed shifts, and in one piece both with the softmax's
    shift skipped where the scores are bounded (small test data: everywhere) and with it never
    skipped. Causal attention without a mask goes through the causal blocks (of two queries
    and one batch row, so that short tests cross several) only where the layout says so."""
    from lucid.nn import causal_attention, functional

    causal_blocks = request.param == "causal blocks"
    monkeypatch.setattr(causal_attention, "QUERY_ROWS", 2)
    monkeypatch.setattr(causal_attention, "BLOCK_SCORES", 1)
    monkeypatch.setattr(functional, "fits", lambda *shape: causal_blocks)
    monkeypatch.setattr(functional, "KEYS_FIRST_ROWS", 2**62 if request.param == "queries first" else 1)
    monkeypatch.setattr(functional, "KEY_TILE", 2)
    monkeypatch.setattr(functional, "TILED_FROM_DIM", 1 if request.param.endswith("tiled") else 2**62)
    if request.param.endswith("always shifted"):
        monkeypatch.setattr(functional, "UNSHIFTED_BOUND", -1.0)
    return request.param


@pytest.fixture
def small_blocks(monkeypatch, layout):
    """Blocks of MIN_QUERY_BLOCK queries whatever the sizes, so short tests cross many blocks."""
    from lucid.nn import functional

    monkeypatch.setattr(functional, "SCORES_PER_BLOCK", 1)
    return functional.MIN_QUERY_BLOCK


@pytest.mark.parametrize("q_heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("q_len, causal", [(5, True), (1, True), (3, True), (5, False)])
def test_matches_formula(backend_name, layout, q_heads, kv_heads, q_len, causal):
    q, k, v = data(q_heads, kv_heads, q_len)
    got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), is_causal=causal)
    np.testing.assert_allclose(got.numpy(), reference(q, k, v, causal=causal), rtol=1e-5, atol=1e-5)


def test_boolean_and_additive_masks_and_scale(backend_name, layout):
    q, k, v = data()
    rng = np.random.default_rng(2)
    bool_mask = rng.random((2, 1, 3, 5)) > 0.4
    bool_mask[..., 0] = True
    add_mask = rng.standard_normal((3, 5)).astype(np.float32)
    for mask in (bool_mask, add_mask):
        got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v),
                                           attn_mask=on_backend(mask), scale=0.3)
        np.testing.assert_allclose(got.numpy(), reference(q, k, v, mask=mask, scale=0.3), rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_are_zero_and_softmax_is_stable(layout):
    q, k, v = data(q_len=2)
    mask = np.ones((2, 5), bool)
    mask[1] = False
    got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), attn_mask=on_backend(mask))
    assert np.isfinite(got.numpy()).all() and not got.numpy()[:, :, 1].any()
    big = softmax(on_backend([1000.0, 1000.0])).tolist()
    assert big == [0.5, 0.5]


@pytest.mark.parametrize("q_scale, v_scale", [(400.0, 1.0), (3.0, 1e36)])
def test_large_scores_and_values(backend_name, layout, q_scale, v_scale):
    """Scores far past the bound (2 ** score would overflow float32) and values so large that
    unshifted weights times them would overflow: both take the shifted softmax and stay exact."""
    q, k, v = data(q_len=4, k_len=6)
    q, v = q * np.float32(q_scale), v * np.float32(v_scale)
    got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), is_causal=True).numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference(q.astype(np.float64), k, v.astype(np.float64), causal=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * v_scale)


def test_tiled_blocks_probe_their_shift_and_fall_back_to_the_maximum(monkeypatch):
    """A tiled block shifts each row by its scores against a few probed keys: exact when the
    probes are far below the maximum (weights well above one), and recomputed with the row's
    maximum when they are so far below that the weights overflow."""
    from lucid.nn import functional

    monkeypatch.setattr(functional, "KEYS_FIRST_ROWS", 1)
    monkeypatch.setattr(functional, "KEY_TILE", 3)
    monkeypatch.setattr(functional, "TILED_FROM_DIM", 1)
    calls = []
    exact = functional._attend
    monkeypatch.setattr(functional, "_attend", lambda *args: calls.append(1) or exact(*args))
    q, k, v = data(q_len=4, k_len=20)  # probes: keys 0, 3, 6, ... 18
    for gap, recomputed in ((30.0, False), (400.0, True)):
        far = k.copy()  # key 4 lies along query 0 of each key/value head's first query head
        far[:, :, 4] = q[:, ::2, 0] * gap / np.linalg.norm(q[:, ::2, 0], axis=-1, keepdims=True)
        calls.clear()
        got = scaled_dot_product_attention(on_backend(q), on_backend(far), on_backend(v)).numpy()
        np.testing.assert_allclose(got, reference(q.astype(np.float64), far, v), rtol=1e-4, atol=1e-6)
        assert bool(calls) == recomputed


def test_score_bounds_decide_the_shift():
    """The bound skips the shift for small scores only, and never for values it cannot bound."""
    from lucid.nn import functional

    xp = lucid.get_backend().xp
    q, k, v = (xp.asarray(a) for a in data())
    small = functional._ScoreBounds(xp, k, v)
    assert small.unshifted(q, 0, 2, 0, 5)
    assert not small.unshifted(q * 100.0, 0, 2, 0, 5)
    assert not functional._ScoreBounds(xp, k, v * 1e35).unshifted(q, 0, 2, 0, 5)
    assert not functional._ScoreBounds(xp, k, v * float("nan")).unshifted(q, 0, 2, 0, 5)
    assert not small.unshifted(q * float("nan"), 0, 2, 0, 5)


def test_bad_shapes_raise():
    q, k, v = data(q_heads=3, kv_heads=2)
    with pytest.raises(ValueError, match="multiple"):
        scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v))


@pytest.mark.parametrize("window, sinks", [(None, 0), (3, 0), (3, 2)])
def test_attention_mask_from_absolute_positions(backend_name, window, sinks):
    queries, keys = [7, 8, 9], [0, 1, 5, 6, 7, 8, 9]
    got = attention_mask(on_backend(queries), on_backend(keys), window=window, sink_tokens=sinks).tolist()
    for i, q in enumerate(queries):
        for j, k in enumerate(keys):
            visible = k <= q and (window is None or q - k < window or k < sinks)
            assert got[i][j] == visible, (q, k)


@pytest.mark.parametrize("window, sinks", [(None, 0), (50, 3), (20, 0)])
def test_query_blocks_match_the_formula(backend_name, small_blocks, window, sinks):
    """Many blocks: each reads only the keys its rows see (a sliding window drops the distant
    past, causality the future) and masks only the keys its rows disagree on."""
    q, k, v = data(q_heads=4, kv_heads=2, q_len=small_blocks * 9 + 7, k_len=small_blocks * 9 + 10)
    positions = np.arange(k.shape[2])
    queries = positions[-q.shape[2]:]
    mask = attention_mask(on_backend(queries), on_backend(positions), window=window, sink_tokens=sinks)
    got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), attn_mask=mask)
    np.testing.assert_allclose(got.numpy(), reference(q, k, v, mask=mask.numpy()), rtol=1e-4, atol=1e-5)
    causal = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), is_causal=True)
    np.testing.assert_allclose(causal.numpy(), reference(q, k, v, causal=True), rtol=1e-4, atol=1e-5)


def test_query_blocks_with_per_head_masks_biases_and_blind_rows(backend_name, small_blocks):
    q, k, v = data(q_heads=6, kv_heads=2, q_len=small_blocks * 3 + 5, k_len=small_blocks * 3 + 9)
    rng = np.random.default_rng(3)
    per_head = rng.random((2, 6) + (q.shape[2], k.shape[2])) > 0.3
    per_head[:, :, small_blocks:2 * small_blocks] = False  # a whole block sees nothing
    per_head[:, :, :small_blocks, 30:] = False  # and one sees only a prefix of the keys
    bias = rng.standard_normal((1, 6, q.shape[2], k.shape[2])).astype(np.float32)
    for mask in (per_head, bias):
        got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v),
                                           attn_mask=on_backend(mask)).numpy()
        np.testing.assert_allclose(got, reference(q, k, v, mask=mask), rtol=1e-4, atol=1e-5)
        assert np.isfinite(got).all()
        assert (mask is bias) == bool(got[:, :, small_blocks:2 * small_blocks].any())


def test_batch_rows_split_unevenly_across_blocks(backend_name, layout, monkeypatch):
    """Three batch rows in blocks of two: the last block holds one row, with its own mask."""
    from lucid.nn import functional

    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(shape).astype(np.float32)
               for shape in ((3, 4, 40, 8), (3, 2, 45, 8), (3, 2, 45, 8)))
    monkeypatch.setattr(functional, "QUERY_BLOCK", 16)
    monkeypatch.setattr(functional, "SCORES_PER_BLOCK", 2 * 16 * 4 * 45)  # 16 queries x 2 batch rows
    mask = rng.random((3, 1, 40, 45)) > 0.5
    got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), attn_mask=on_backend(mask))
    np.testing.assert_allclose(got.numpy(), reference(q, k, v, mask=mask), rtol=1e-4, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_causal_blocks_match_the_formula(data):
    """Causal attention of the last ``Lq`` of ``Lk`` keys in blocks of a few queries and batch
    rows, any sizes (a last block shorter than the rest), grouped heads, scores far past
    float32's exponential range: the textbook formula's result."""
    from lucid.nn.causal_attention import attend_causal

    draw = data.draw
    batch, kv_heads, group = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k_len = draw(st.integers(2, 40))
    q_len, dim, dv = draw(st.integers(2, k_len)), draw(st.sampled_from([1, 4, 8])), draw(st.integers(1, 5))
    spread = draw(st.sampled_from([0.1, 1.0, 8.0]))  # 8: scores of a few hundred, 2 ** score past float32
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = (rng.standard_normal((batch, kv_heads * group, q_len, dim)) * spread).astype(np.float32)
    k = (rng.standard_normal((batch, kv_heads, k_len, dim)) * spread).astype(np.float32)
    v = rng.standard_normal((batch, kv_heads, k_len, dv)).astype(np.float32)
    import lucid.nn.causal_attention as blocks

    old = blocks.QUERY_ROWS, blocks.BLOCK_SCORES
    blocks.QUERY_ROWS = draw(st.integers(1, 8))
    blocks.BLOCK_SCORES = draw(st.integers(1, 4)) * kv_heads * group * blocks.QUERY_ROWS * k_len  # 1-4 rows a block
    try:
        backend = lucid.get_backend()
        got = backend.to_host(attend_causal(backend, *(backend.from_host(a) for a in (q, k, v)), 0.7))
    finally:
        blocks.QUERY_ROWS, blocks.BLOCK_SCORES = old
    want = reference(q.astype(np.float64), k.astype(np.float64), v, causal=True, scale=0.7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_prefill_takes_the_causal_blocks_and_a_mask_or_a_long_prompt_does_not(monkeypatch):
    """``is_causal`` without a mask, over keys whose blocks fit, goes through the causal
    blocks; a mask (which may hide more than the future) or keys too many for a block's scores
    to stay small take the mask-reading blocks. All give the formula's result."""
    from lucid.nn import causal_attention, functional

    calls = []
    real = functional.attend_causal
    monkeypatch.setattr(functional, "attend_causal", lambda *args: calls.append(1) or real(*args))
    q, k, v = data(q_len=4, k_len=6)
    mask = np.arange(6)[None, :] <= np.arange(4)[:, None] + 2
    for kwargs, taken in (({"is_causal": True}, True), ({"attn_mask": on_backend(mask)}, False)):
        calls.clear()
        got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), **kwargs).numpy()
        np.testing.assert_allclose(got, reference(q, k, v, causal=True), rtol=1e-5, atol=1e-5)
        assert bool(calls) == taken
    monkeypatch.setattr(causal_attention, "BLOCK_SCORES", 4 * 64 * 6 - 1)  # one row of one block too many
    calls.clear()
    got = scaled_dot_product_attention(on_backend(q), on_backend(k), on_backend(v), is_causal=True).numpy()
    np.testing.assert_allclose(got, reference(q, k, v, causal=True), rtol=1e-5, atol=1e-5)
    assert not calls


def test_float16_attention_runs_in_float32_and_returns_float16():
    """NumPy multiplies float16 without BLAS (about 15x slower): attention computes in float32
    and hands back float16, as close to the float32 result as float16 holds."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape).astype(np.float16) for shape in ((1, 4, 3, 16), (1, 2, 40, 16), (1, 2, 40, 16)))
    with lucid.use_backend("numpy"):
        got = scaled_dot_product_attention(q, k, v, is_causal=True)
        want = scaled_dot_product_attention(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                                              is_causal=True).numpy()
    assert got.dtype == lucid.Float16
    np.testing.assert_allclose(got.numpy().astype(np.float32), want, atol=2e-3, rtol=1e-3)
