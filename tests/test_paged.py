"""PagedKVCache: block tables over one pool, copy-on-write forks; exact against a DynamicKVCache
driven through the same operations, and a write that does not fit changes nothing."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import lucid
import lucid.nn as nn
from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel

MODEL = LlamaModel.random(LlamaConfig(num_layers=2))


def same(paged: nn.PagedKVCache, reference: nn.DynamicKVCache, layers: int = 2) -> None:
    assert paged.batch_size() == reference.batch_size()
    for layer in range(layers):
        got, want = paged.get(layer), reference.get(layer)
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
            np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
        assert paged.get_seq_length(layer) == reference.get_seq_length(layer)


def live_blocks(cache: nn.PagedKVCache) -> int:
    return len({block for table in cache.tables.values() for block in table})


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_operations_match_a_dynamic_cache(data):
    block_size = data.draw(st.sampled_from([1, 2, 4, 8]))
    paged, reference = nn.PagedKVCache(num_blocks=256, block_size=block_size), nn.DynamicKVCache()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    rows = data.draw(st.integers(1, 3))
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(st.sampled_from(["update", "update", "select", "repeat", "trim"]))
        batch = reference.batch_size() or rows
        if op == "update":
            count = data.draw(st.integers(1, 9))
            for layer in range(2):
                k = lucid.Tensor(rng.standard_normal((batch, 2, count, 4)).astype(np.float32))
                v = lucid.Tensor(rng.standard_normal((batch, 2, count, 4)).astype(np.float32))
                got, want = paged.update(k, v, layer), reference.update(k, v, layer)
                np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
        elif op == "select" and reference.batch_size():
            picks = data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=4))
            paged.batch_select_indices(picks)
            reference.batch_select_indices(picks)
        elif op == "repeat" and reference.batch_size() and batch < 6:
            paged.batch_repeat_interleave(2)
            reference.batch_repeat_interleave(2)
        elif op == "trim" and reference.batch_size():
            n = data.draw(st.integers(0, reference.get_seq_length(0)))
            assert paged.can_trim(n) and paged.trim(n) == reference.trim(n)
        same(paged, reference)
        assert paged.blocks_used() == live_blocks(paged)  # every held block is in some table, and no other
        length = reference.get_seq_length(0)
        assert paged.blocks_used() <= len(paged.batch) * -(-length // block_size)  # forks share


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 3}, {"stop_token_ids": "second"}])
def test_generation_matches_the_dynamic_cache(kwargs):
    prompt = np.random.default_rng(0).integers(0, 256, size=(2, 9))
    plain = generate(MODEL, prompt, 12)
    if kwargs.get("stop_token_ids") == "second":  # one row stops early: the cache keeps the other
        kwargs = {"stop_token_ids": [int(plain.tokens[0, 12])]}
    reference = generate(MODEL, prompt, 12, **kwargs)
    paged = generate(MODEL, prompt, 12, cache=nn.PagedKVCache(num_blocks=64, block_size=4), **kwargs)
    np.testing.assert_array_equal(paged.tokens, reference.tokens)
    assert paged.new_tokens == reference.new_tokens


def test_forks_copy_only_the_block_they_write():
    cache = nn.PagedKVCache(num_blocks=16, block_size=4)
    cache.update(lucid.randn(1, 2, 10, 4), lucid.randn(1, 2, 10, 4), 0)  # 3 blocks, the last one half full
    original = cache.get(0)[0].numpy().copy()
    twin = cache.fork(0)
    assert cache.blocks_used() == 3 and cache.tables[twin] == cache.tables[0]
    cache.batch = [twin]
    cache.update(lucid.randn(1, 2, 1, 4), lucid.randn(1, 2, 1, 4), 0)
    assert cache.blocks_used() == 4 and cache.tables[twin][:2] == cache.tables[0][:2]
    cache.batch = [0]
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), original)  # the original never changed
    cache.remove_sequence(twin)
    assert cache.blocks_used() == 3


def test_a_write_past_the_pool_is_a_value_error_that_changes_nothing():
    cache = nn.PagedKVCache(num_blocks=3, block_size=4)
    cache.update(lucid.randn(2, 1, 4, 2), lucid.randn(2, 1, 4, 2), 0)
    before = (cache.get(0)[0].numpy().copy(), dict(cache.tables), cache.blocks_used())
    with pytest.raises(ValueError, match="num_blocks=3"):
        cache.update(lucid.randn(2, 1, 1, 2), lucid.randn(2, 1, 1, 2), 0)  # needs 2 more blocks, 1 free
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), before[0])
    assert cache.tables == before[1] and cache.blocks_used() == before[2] and cache.get_seq_length(0) == 4


def test_memory_follows_the_live_tokens_under_churn():
    """Sequences of random lengths arrive and leave; the blocks held never exceed what their
    positions fill, and all come back."""
    rng = np.random.default_rng(1)
    cache = nn.PagedKVCache(num_blocks=2000, block_size=16)
    live = []
    for _ in range(60):
        if live and rng.random() < 0.4:
            cache.remove_sequence(live.pop(int(rng.integers(len(live)))))
        seq = cache.add_sequence()
        cache.batch = [seq]
        length = int(rng.integers(16, 300))
        cache.update(lucid.zeros(1, 1, length, 2), lucid.zeros(1, 1, length, 2), 0)
        live.append(seq)
        needed = sum(-(-cache.lengths[s][0] // 16) for s in live)
        assert cache.blocks_used() == needed
        held = sum(cache.lengths[s][0] for s in live)
        assert cache.blocks_used() * 16 <= held + 16 * len(live)  # at most one part-filled block each
    for seq in live:
        cache.remove_sequence(seq)
    assert cache.blocks_used() == 0


def test_bad_arguments_and_save_load(tmp_path):
    with pytest.raises(ValueError, match="num_blocks"):
        nn.PagedKVCache(0)
    cache = nn.PagedKVCache(num_blocks=8, block_size=2)
    cache.update(lucid.randn(2, 1, 3, 2), lucid.randn(2, 1, 3, 2), 0)
    with pytest.raises(ValueError, match="seq must be the id"):
        cache.fork(7)
    with pytest.raises(ValueError, match="renumber"):
        cache.crop(1)
    with pytest.raises(ValueError, match="2 sequences; the update has 3 rows"):
        cache.update(lucid.randn(3, 1, 1, 2), lucid.randn(3, 1, 1, 2), 0)
    cache.save(tmp_path / "paged")
    loaded = nn.load_cache(tmp_path / "paged")
    np.testing.assert_array_equal(loaded.get(0)[0].numpy(), cache.get(0)[0].numpy())
    assert loaded.tables == cache.tables and loaded.blocks_used() == cache.blocks_used()


def test_requests_sharing_a_prompt_prefix_share_its_blocks():
    rng = np.random.default_rng(3)
    system = rng.integers(0, 256, size=40)
    cache = nn.PagedKVCache(num_blocks=64, block_size=8)
    answers = []
    for question in ([1, 2, 3], [9, 8, 7, 6]):
        prompt = np.concatenate([system, question])
        cache.batch = []
        seq = cache.add_sequence(tokens=prompt)
        held = cache.get_seq_length(0)
        out = generate(MODEL, prompt[None, :], 6, cache=cache)
        np.testing.assert_array_equal(out.tokens, generate(MODEL, prompt[None, :], 6).tokens)
        answers.append((seq, held))
    assert [held for _, held in answers] == [0, 40]  # the second request started on 5 cached blocks
    first, second = answers[0][0], answers[1][0]
    assert cache.tables[first][:5] == cache.tables[second][:5]


def test_cached_blocks_outlive_their_sequence_until_the_memory_is_needed():
    cache = nn.PagedKVCache(num_blocks=6, block_size=4)
    prompt = list(range(13))
    seq = cache.add_sequence(tokens=prompt)
    cache.update(lucid.randn(1, 1, 13, 2), lucid.randn(1, 1, 13, 2), 0)
    kept = cache.get(0)[0].numpy()[..., :12, :].copy()
    cache.remove_sequence(seq)
    assert cache.blocks_used() == 0  # free for anyone, yet still registered
    again = cache.add_sequence(tokens=prompt)
    assert cache.get_seq_length(0) == 12
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), kept)
    cache.remove_sequence(again)
    other = cache.add_sequence()
    cache.batch = [other]
    cache.update(lucid.randn(1, 1, 24, 2), lucid.randn(1, 1, 24, 2), 0)  # needs every block: evicts the cached ones
    cache.remove_sequence(other)
    cache.add_sequence(tokens=prompt)
    assert cache.get_seq_length(0) == 0  # the prefix is gone with its blocks


def test_a_trimmed_sequence_never_changes_a_registered_block():
    cache = nn.PagedKVCache(num_blocks=16, block_size=4)
    prompt = list(range(9))
    seq = cache.add_sequence(tokens=prompt)
    cache.update(lucid.randn(1, 1, 9, 2), lucid.randn(1, 1, 9, 2), 0)
    registered = cache.get(0)[0].numpy()[..., :8, :].copy()
    cache.batch = []
    probe = cache.add_sequence(tokens=prompt)  # adding a sequence registers the others' prompt blocks
    assert cache.get_seq_length(0) == 8
    cache.remove_sequence(probe)
    cache.batch = [seq]
    cache.trim(6)  # back into the second (registered) block
    cache.update(lucid.randn(1, 1, 6, 2), lucid.randn(1, 1, 6, 2), 0)  # new text over it: written to a copy
    cache.batch = []
    cache.add_sequence(tokens=prompt)
    assert cache.get_seq_length(0) == 8
    np.testing.assert_array_equal(cache.get(0)[0].numpy(), registered)
    assert seq in cache.tables


def test_prompts_of_different_lengths_decode_together_as_each_would_alone():
    rng = np.random.default_rng(5)
    system = rng.integers(0, 256, size=32).tolist()
    prompts = [rng.integers(0, 256, size=n).tolist() for n in (3, 17, 9)] + [system + [1, 2], system + [7]]
    alone = [generate(MODEL, [prompt], 12).tokens[0] for prompt in prompts]
    stop = int(alone[1][len(prompts[1]) + 4])  # row 1 stops early; the others go on
    together = generate(MODEL, prompts, 12, stop_token_ids=[stop])
    for row, prompt in enumerate(prompts):
        expected = generate(MODEL, [prompt], 12, stop_token_ids=[stop]).new_tokens[0]
        assert together.new_tokens[row] == expected
        np.testing.assert_array_equal(together.tokens[row][:len(prompt) + len(expected)],
                                      alone[row][:len(prompt) + len(expected)])
    cache = nn.PagedKVCache(num_blocks=64, block_size=16)
    generate(MODEL, prompts, 4, cache=cache)
    assert cache.tables[3][:2] == cache.tables[4][:2]  # the shared system prompt's blocks, held once
    with pytest.raises(ValueError, match="PagedKVCache"):
        generate(MODEL, prompts, 4, cache="static")
    with pytest.raises(ValueError, match="num_beams=1"):
        generate(MODEL, prompts, 4, num_beams=2)


def test_paged_is_a_cache_kind_for_generate():
    prompt = np.random.default_rng(6).integers(0, 256, size=(3, 7))
    np.testing.assert_array_equal(generate(MODEL, prompt, 9, cache="paged", num_beams=2).tokens,
                                  generate(MODEL, prompt, 9, num_beams=2).tokens)


@pytest.mark.parametrize("backend_name", ["array_api_strict"], indirect=True)
def test_the_paged_cache_needs_only_the_array_api(backend_name):
    """Writes of rows of different lengths, a fork, a trim and the gathers, on array-api-strict,
    give what the same calls give on NumPy."""
    def run():
        rng, backend = np.random.default_rng(3), lucid.get_backend()

        def rand(*shape):
            return lucid.Tensor.wrap(backend.from_host(rng.standard_normal(shape).astype(np.float32)), backend)

        cache = nn.PagedKVCache(32, block_size=4)
        cache.update(rand(2, 2, 5, 8), rand(2, 2, 5, 8), 0)
        cache.batch = [0]
        cache.update(rand(1, 2, 6, 8), rand(1, 2, 6, 8), 0)
        twin = cache.fork(1)
        cache.batch = [0, 1, twin]
        keys, values = cache.update(rand(3, 2, 1, 8), rand(3, 2, 1, 8), 0, cache_position=[[11], [5], [5]])
        cache.batch = [twin]
        cache.trim(2)
        cache.batch = [0, twin]
        return [a.numpy() for a in (keys, values, *cache.get(0))]

    strict = run()
    with lucid.use_backend("numpy"):
        reference = run()
    for got, want in zip(strict, reference):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_decode_step_reads_the_blocks_as_the_gathered_keys_would_give(backend_name, data):
    """Attention of one query per row over what ``update`` returns reads the blocks where the
    mask hides every row's padding, without laying them out, and equals attention over the
    gathered keys (a causal mask, or a sliding window with sinks: a row sees a span with holes
    in it, or nothing); where the mask lets a row see its padding (zeros in the gathered
    keys), or no mask is given for rows of different lengths, it reads the gathered keys."""
    from lucid.nn.cache.paged_tensor import PagedTensor
    from lucid.nn.functional import attention_mask, scaled_dot_product_attention

    rows = data.draw(st.integers(1, 4))
    lengths = data.draw(st.lists(st.integers(1, 40), min_size=rows, max_size=rows))
    block, kv_heads, group = data.draw(st.sampled_from([1, 4, 16])), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    cache = nn.PagedKVCache(num_blocks=sum(-(-n // block) for n in lengths) + rows, block_size=block)
    seqs = [cache.add_sequence() for _ in range(rows)]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for seq, n in zip(seqs, lengths):  # each prompt alone, then one decode step together
        cache.batch = [seq]
        k = lucid.Tensor(rng.standard_normal((1, kv_heads, n - 1, 8)).astype(np.float32))
        if n > 1:
            cache.update(k, k * 2, 0)
    cache.batch = seqs
    new = lucid.Tensor(rng.standard_normal((rows, kv_heads, 1, 8)).astype(np.float32))
    keys, values = cache.update(new, new * 2, 0, cache_position=lucid.Tensor(np.array(lengths)[:, None] - 1))
    assert isinstance(keys, PagedTensor) and keys.shape == (rows, kv_heads, max(lengths), 8)
    query = lucid.Tensor(rng.standard_normal((rows, kv_heads * group, 1, 8)).astype(np.float32))
    positions = lucid.Tensor(np.array(lengths)[:, None] - 1)
    window = data.draw(st.sampled_from([None, 1, 3, 8, 64]))
    sinks = data.draw(st.sampled_from([0, 2])) if window else 0
    mask = attention_mask(positions, cache.key_positions(0), window=window, sink_tokens=sinks)[:, None, ...]
    if data.draw(st.booleans()):  # a row that sees nothing at all
        hidden = mask.numpy().copy()
        hidden[data.draw(st.integers(0, rows - 1))] = False
        mask = lucid.Tensor(hidden)
    gathered = (lucid.Tensor(keys.numpy()), lucid.Tensor(values.numpy()))
    keys, values = cache.get(0)
    got = scaled_dot_product_attention(query, keys, values, attn_mask=mask).numpy()
    assert not keys.built and not values.built
    want = scaled_dot_product_attention(query, *gathered, attn_mask=mask).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    keys, values = cache.get(0)
    got = scaled_dot_product_attention(query, keys, values).numpy()  # no mask: the padding's zeros count
    assert keys.built == (min(lengths) < max(lengths))
    np.testing.assert_allclose(got, scaled_dot_product_attention(query, *gathered).numpy(), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_rows_that_share_prompt_blocks_read_them_once_and_attend_as_the_gathered_keys_give(backend_name, data):
    """Forks of one prompt and sequences that found its blocks cached share their first blocks;
    a decode step reads those blocks once for all the rows that see them whole, the rest of
    each row on its own, and equals attention over the gathered keys: with a causal mask, a
    sliding window with sinks (rows that do not see the shared blocks whole read everything
    alone), a row that sees only its first positions, or nothing."""
    from lucid.nn.functional import attention_mask, scaled_dot_product_attention
    from lucid.nn.paged_attention import shared_prefixes, visible_spans

    block, kv_heads, group = data.draw(st.sampled_from([1, 4, 8])), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    prompt = data.draw(st.integers(1, 40))
    extras = data.draw(st.lists(st.integers(0, 12), min_size=1, max_size=4))  # each fork's own tokens
    strangers = data.draw(st.integers(0, 2))  # rows of their own prompt
    rows = 1 + len(extras) + strangers
    # Room for every row at its longest: a fork's prompt, its own 12 and the step's token, or a
    # stranger's 40 and the step's (a fork's copied block included)
    cache = nn.PagedKVCache(num_blocks=rows * (-(-(max(prompt + 13, 41)) // block) + 1), block_size=block)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))

    def write(seq, n, start):
        cache.batch = [seq]
        k = lucid.Tensor(rng.standard_normal((1, kv_heads, n, 8)).astype(np.float32))
        cache.update(k, k * 2, 0, cache_position=list(range(start, start + n)))

    first = cache.add_sequence()
    write(first, prompt, 0)
    seqs, lengths = [first], [prompt]
    for extra in extras:
        cache.batch = []
        seqs.append(cache.fork(first))
        if extra:
            write(seqs[-1], extra, prompt)
        lengths.append(prompt + extra)
    for _ in range(strangers):
        cache.batch = []
        seqs.append(cache.add_sequence())
        lengths.append(data.draw(st.integers(1, 40)))
        write(seqs[-1], lengths[-1], 0)
    cache.batch = seqs
    new = lucid.Tensor(rng.standard_normal((rows, kv_heads, 1, 8)).astype(np.float32))
    at = np.array(lengths)[:, None]
    keys, values = cache.update(new, new * 2, 0, cache_position=lucid.Tensor(at))
    window = data.draw(st.sampled_from([None, None, 3, 64]))
    mask = attention_mask(lucid.Tensor(at), cache.key_positions(0), window=window,
                          sink_tokens=data.draw(st.sampled_from([0, 2])) if window else 0)[:, None, ...]
    cut = data.draw(st.one_of(st.none(), st.tuples(st.integers(0, rows - 1), st.integers(0, 40))))
    if cut is not None:  # a row sees only its first positions (none at all when cut at 0)
        hidden = mask.numpy().copy()
        hidden[cut[0], ..., cut[1]:] = False
        mask = lucid.Tensor(hidden)
    gathered = (lucid.Tensor(keys.numpy()), lucid.Tensor(values.numpy()))
    query = lucid.Tensor(rng.standard_normal((rows, kv_heads * group, 1, 8)).astype(np.float32))
    keys, values = cache.get(0)
    backend = lucid.get_backend()
    seen = np.zeros((rows, keys.table.shape[1] * block), dtype=bool)
    seen[:, :max(lengths) + 1] = mask.numpy()[:, 0, 0, :]
    groups = shared_prefixes(backend.to_host(keys.table).tolist(), visible_spans(backend, backend.from_host(seen)), block)
    if window is None and cut is None and prompt >= block and len(extras) > 0:
        assert groups and set(range(1 + len(extras))) <= set(groups[0][0])  # the forks share the prompt's blocks
    got = scaled_dot_product_attention(query, keys, values, attn_mask=mask).numpy()
    assert not keys.built and not values.built
    np.testing.assert_allclose(got, scaled_dot_product_attention(query, *gathered, attn_mask=mask).numpy(),
                               rtol=1e-5, atol=1e-6)
