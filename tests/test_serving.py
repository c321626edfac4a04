"""The engine: requests of any length, added at any time, decoded together over one paged cache;
each request's tokens are the ones its prompt alone gives, preempted or not."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lucid.generation import generate
from lucid.models import LlamaConfig, LlamaModel
from lucid.serving import Engine

MODEL = LlamaModel.random(LlamaConfig(num_layers=2))
RNG = np.random.default_rng(0)
SYSTEM = RNG.integers(0, 256, size=24).tolist()
PROMPTS = [RNG.integers(0, 256, size=n).tolist() for n in (3, 40, 11, 70)] + [SYSTEM + [1, 2], SYSTEM + [3]]


def alone(prompt, new, **kwargs):
    return generate(MODEL, [prompt], new, **kwargs).new_tokens[0]


def run(engine):
    while engine.has_unfinished():
        engine.step()


def test_requests_added_over_time_get_what_their_prompt_alone_gives():
    engine = Engine(MODEL, num_blocks=128, block_size=8, max_batch_tokens=16)  # long prompts in chunks
    ids = {}
    for i, prompt in enumerate(PROMPTS):
        ids[engine.add_request(prompt, max_new_tokens=6 + i)] = (prompt, 6 + i)
        engine.step()  # the others decode while the next one arrives
    run(engine)
    for rid, (prompt, new) in ids.items():
        assert engine.tokens(rid) == alone(prompt, new)
    assert engine.cache.blocks_used() == 0  # every block back in the pool
    assert engine.preemptions == 0


def test_a_full_pool_preempts_the_newest_and_recomputes_it_exactly():
    engine = Engine(MODEL, num_blocks=14, block_size=8)  # 112 positions for 6 requests of up to 100
    ids = {engine.add_request(prompt, max_new_tokens=20): prompt for prompt in PROMPTS}
    run(engine)
    assert engine.preemptions > 0
    for rid, prompt in ids.items():
        assert engine.tokens(rid) == alone(prompt, 20)
    assert engine.cache.blocks_used() == 0


def test_sampling_stops_and_streaming():
    engine = Engine(MODEL, num_blocks=64, block_size=8)
    sampled = engine.add_request(PROMPTS[1], max_new_tokens=12, temperature=0.9, top_p=0.9, seed=3)
    greedy = alone(PROMPTS[2], 12)
    stopped = engine.add_request(PROMPTS[2], max_new_tokens=12, stop=[greedy[4]])
    streamed = list(engine.stream(stopped))
    run(engine)
    assert engine.tokens(sampled) == alone(PROMPTS[1], 12, temperature=0.9, top_p=0.9, seed=3)
    assert streamed == engine.tokens(stopped) == greedy[:greedy.index(greedy[4]) + 1]


def test_cancel_frees_the_blocks_at_once_and_bad_requests_are_value_errors():
    engine = Engine(MODEL, num_blocks=32, block_size=8)
    rid = engine.add_request(PROMPTS[3], max_new_tokens=10)
    engine.step()
    assert engine.cache.blocks_used() > 0
    engine.cancel(rid)
    assert engine.cache.blocks_used() == 0 and not engine.has_unfinished()
    for call, text in ((lambda: engine.cancel(99), "request_id 99"), (lambda: engine.tokens("a"), "request_id"),
                       (lambda: engine.add_request([], 3), "non-empty"),
                       (lambda: engine.add_request([1, 300], 3), "vocabulary"),
                       (lambda: engine.add_request([1, 2], 0), "max_new_tokens"),
                       (lambda: engine.add_request([1] * 200, 100), "more than the pool's 256"),
                       (lambda: engine.add_request(messages=[{"role": "user", "content": "hi"}]), "tokenizer")):
        with pytest.raises(ValueError, match=text):
            call()
    assert not engine.has_unfinished()
    rid = engine.add_request(PROMPTS[0], max_new_tokens=4)  # the engine goes on serving
    run(engine)
    assert engine.tokens(rid) == alone(PROMPTS[0], 4)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_arrivals_steps_and_cancels_match_each_prompt_alone(data):
    """Requests arrive, the engine steps, some are cancelled, the pool is sometimes too small
    (preemptions): every request that finishes has its prompt's greedy tokens, and one that was
    cancelled a prefix of them; every block comes back."""
    engine = Engine(MODEL, num_blocks=data.draw(st.integers(10, 40)), block_size=4,
                    max_batch_tokens=data.draw(st.integers(4, 64)))
    requests = {}
    for _ in range(data.draw(st.integers(1, 12))):
        op = data.draw(st.sampled_from(["add", "add", "step", "step", "cancel"]))
        if op == "add":
            length = data.draw(st.integers(1, 30))
            prompt = (SYSTEM[:data.draw(st.integers(0, 24))] + list(range(1, length + 1)))[-30:]
            new = data.draw(st.integers(1, 8))
            requests[engine.add_request(prompt, max_new_tokens=new)] = (prompt, new)
        elif op == "step":
            for _ in range(data.draw(st.integers(1, 5))):
                engine.step()
        elif requests:
            engine.cancel(data.draw(st.sampled_from(sorted(requests))))
    cancelled = {rid for rid in requests if engine.requests[rid].finished}
    run(engine)
    for rid, (prompt, new) in requests.items():
        expected, got = alone(prompt, new), engine.tokens(rid)
        assert got == expected[:len(got)] and (rid in cancelled or got == expected)
    assert engine.cache.blocks_used() == 0


def test_a_request_past_the_models_context_is_a_value_error():
    import dataclasses

    short = LlamaModel.random(LlamaConfig(num_layers=2))
    short.config = dataclasses.replace(short.config, max_positions=32)
    engine = Engine(short, num_blocks=64, block_size=8)
    with pytest.raises(ValueError, match="past the model's context of 32"):
        engine.add_request(list(range(30)), max_new_tokens=5)
    assert not engine.has_unfinished()
    engine.add_request(list(range(27)), max_new_tokens=5)  # exactly the context: fine


def test_engines_sharing_a_prefix_store_fetch_each_other_s_prompts_exactly():
    import lucid.nn as nn

    tier = nn.MemoryTier()
    system = RNG.integers(0, 256, size=45).tolist()

    def engine():
        return Engine(MODEL, num_blocks=64, block_size=8,
                      prefix_store=nn.PrefixStore([tier], chunk_size=16, fingerprint=MODEL.fingerprint()))

    first, second = engine(), engine()
    a = first.add_request(system + [1, 2], max_new_tokens=5)
    run(first)
    keys = first.prefix_store.chunk_keys(system + [1, 2])
    assert first.cached_tokens == 0 and len(keys) == 2  # two whole chunks in its 47-id prompt...
    assert all(tier.get(key) is not None for key in keys)  # ...both stored
    b = second.add_request(system + [7], max_new_tokens=6)
    run(second)
    assert second.cached_tokens == 32 and second.prompt_tokens == 46  # fetched, not computed
    assert first.tokens(a) == alone(system + [1, 2], 5) and second.tokens(b) == alone(system + [7], 6)
    c = second.add_request(system + [9, 9], max_new_tokens=3)  # its own blocks hold as much: no fetch
    run(second)
    assert second.tokens(c) == alone(system + [9, 9], 3) and second.cached_tokens == 32 + 40


def test_n_choices_are_forks_of_one_prefill_each_as_its_seed_alone_gives():
    engine = Engine(MODEL, num_blocks=64, block_size=8)
    first = engine.add_request(PROMPTS[3], max_new_tokens=9, temperature=0.8, seed=5, n=3)
    engine.step()  # the whole prompt, then the forks: one prefill for the three choices
    assert engine.cached_tokens == 2 * len(PROMPTS[3]) and engine.prompt_tokens == 3 * len(PROMPTS[3])
    prompt_blocks = -(-len(PROMPTS[3]) // 8)
    assert engine.cache.blocks_used() == prompt_blocks  # one prompt's blocks, shared by three
    engine.step()  # the first decode writes into the shared, part-full last block: two copy it
    assert engine.cache.blocks_used() == prompt_blocks + 2
    run(engine)
    for j in range(3):
        assert engine.tokens(first + j) == alone(PROMPTS[3], 9, temperature=0.8, seed=5 + j)
    greedy = engine.add_request(PROMPTS[1], max_new_tokens=5, n=2)
    run(engine)
    assert engine.tokens(greedy) == engine.tokens(greedy + 1) == alone(PROMPTS[1], 5)
    assert engine.cache.blocks_used() == 0


def test_forks_in_a_tight_pool_and_cancelled_choices():
    # 6 blocks of 4 for three choices of 6 + 10 positions: forks share, copy, get preempted
    engine = Engine(MODEL, num_blocks=6, block_size=4)
    first = engine.add_request(PROMPTS[0] + [7, 8, 9], max_new_tokens=10, n=3)
    run(engine)
    assert engine.preemptions > 0
    for j in range(3):
        assert engine.tokens(first + j) == alone(PROMPTS[0] + [7, 8, 9], 10)
    # A choice cancelled before the fork is never forked; a first choice cancelled before its
    # prompt is whole leaves the others to run as requests of their own.
    engine = Engine(MODEL, num_blocks=64, block_size=8, max_batch_tokens=16)
    first = engine.add_request(PROMPTS[3], max_new_tokens=4, n=3)
    engine.cancel(first + 1)
    engine.step()
    engine.cancel(first)
    run(engine)
    assert engine.finish_reason(first) == engine.finish_reason(first + 1) == "cancelled"
    assert engine.tokens(first + 1) == [] and engine.tokens(first + 2) == alone(PROMPTS[3], 4)
    assert engine.cache.blocks_used() == 0
    with pytest.raises(ValueError, match="n must be"):
        engine.add_request([1], n=0)
