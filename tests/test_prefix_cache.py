"""Prefix reuse: the radix tree of cached prefixes, the embedded generator with a prefix cache (same
results as without, fewer prompt tokens computed, counted honestly), and tree searches on it."""

from __future__ import annotations

import threading

import pytest
import torch

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.backends.prefix_cache import PrefixCache
from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from stubs import PROMPT

# --- the radix tree -------------------------------------------------------------------------------


def kv_of(ids: list[int]):
    """A source whose keys/values for token j are the token id itself (values: minus it), so what
    comes back shows which tokens it belongs to."""

    def source(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.tensor(ids[start:end], dtype=torch.float32).view(1, 1, -1, 1)
        return k, -k

    return source


def test_match_finds_the_longest_stored_prefix_with_its_keys_and_values():
    cache = PrefixCache(max_bytes=10**6, bytes_per_token=1)
    assert cache.match([1, 2, 3]).length == 0
    assert cache.insert([1, 2, 3, 4], kv_of([1, 2, 3, 4])) == 4
    m = cache.match([1, 2, 3, 9, 9])
    assert m.length == 3
    k, v = m.kv()
    assert k.flatten().tolist() == [1, 2, 3] and v.flatten().tolist() == [-1, -2, -3]
    assert cache.match([1, 2, 3, 4, 5], limit=2).length == 2
    assert cache.match([2, 3]).length == 0


def test_inserting_a_branch_splits_the_edge_and_stores_only_the_new_tokens():
    cache = PrefixCache(max_bytes=10**6, bytes_per_token=1)
    cache.insert([1, 2, 3, 4], kv_of([1, 2, 3, 4]))
    asked = []

    def source(start: int, end: int):
        asked.append((start, end))
        return kv_of([1, 2, 5, 6])(start, end)

    assert cache.insert([1, 2, 5, 6], source) == 2
    assert asked == [(2, 4)]  # only the part not stored yet
    assert cache.tokens == 6 and len(cache) == 2
    for seq in ([1, 2, 3, 4], [1, 2, 5, 6]):
        m = cache.match(seq)
        assert m.length == 4 and m.kv()[0].flatten().tolist() == seq
    assert cache.insert([1, 2, 3], kv_of([1, 2, 3])) == 0  # a prefix of what is stored
    assert cache.insert([1, 2, 3, 4], kv_of([1, 2, 3, 4])) == 0


def test_least_recently_used_leaves_are_evicted_past_the_cap():
    cache = PrefixCache(max_bytes=10, bytes_per_token=1)
    cache.insert([1, 2, 3, 4], kv_of([1, 2, 3, 4]))
    cache.insert([1, 2, 5, 6], kv_of([1, 2, 5, 6]))
    cache.insert([7, 8, 9], kv_of([7, 8, 9]))
    cache.match([1, 2, 3, 4])  # used: keep it
    assert cache.tokens == 9 and cache.evict() == 0
    cache.insert([7, 8, 9, 10, 11], kv_of([7, 8, 9, 10, 11]))
    assert cache.evict() == 2  # [5, 6]: the oldest leaf
    assert cache.tokens == 9 <= cache.max_tokens
    assert cache.match([1, 2, 5, 6]).length == 2  # the shared prefix stays
    assert cache.match([1, 2, 3, 4]).length == 4
    cache.clear()
    assert cache.tokens == 0 and cache.match([1, 2]).length == 0


# --- the embedded generator with a prefix cache --------------------------------------------------


def search_like_calls(gen: EmbeddedGenerator, temperature: float, seed: int = 0):
    """Three rounds of continuing sampled steps, as a tree search does; returns every group."""
    prompts, out = [PROMPT], []
    for r in range(3):
        params = SamplingParams(
            n=3, temperature=temperature, max_new_tokens=12, stop_at_step=True, seed=seed + r
        )
        groups = gen.generate(prompts, params)
        out.append((groups, gen.last_usage))
        prompts = [p + c.text for p, g in zip(prompts, groups) for c in g[:2]]
        prompts.append(PROMPT + "84+7")  # a prefix of nothing generated: partly cached
    return out


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_matches_uncached(policy_model, temperature):
    plain = search_like_calls(EmbeddedGenerator(policy_model), temperature)
    cached = search_like_calls(EmbeddedGenerator(policy_model, prefix_cache_mb=4), temperature)
    for (groups_a, usage_a), (groups_b, usage_b) in zip(plain, cached):
        for ga, gb in zip(groups_a, groups_b):
            for a, b in zip(ga, gb):
                assert (a.text, a.finish_reason, a.token_ids) == (b.text, b.finish_reason, b.token_ids)
                assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
                assert a.prompt_tokens == b.prompt_tokens
                assert b.prompt_tokens - b.cached_prompt_tokens >= 1
        # What was reused is what was not computed.
        assert usage_b.prompt_tokens + usage_b.cached_prompt_tokens == usage_a.prompt_tokens
        assert usage_b.completion_tokens == usage_a.completion_tokens
    assert cached[0][1].cached_prompt_tokens == 0
    assert all(u.prompt_tokens < plain[i][1].prompt_tokens for i, (_, u) in enumerate(cached) if i)


def test_a_path_grown_from_a_sample_recomputes_only_its_last_token(flat_policy_model):
    gen = EmbeddedGenerator(flat_policy_model, prefix_cache_mb=4)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=60, stop_at_step=True, seed=1)
    first = gen.generate([PROMPT], params)[0]
    stopped = [c for c in first if c.finish_reason == "stop"]
    assert stopped
    grown = [PROMPT + c.text for c in stopped]
    again = gen.generate(grown, params)
    # The samples' own keys and values were kept: all of each prompt but the step delimiter, which
    # ended the sample before the model read it.
    assert gen.last_usage.prompt_tokens == len(grown)
    for group, p in zip(again, grown):
        assert group[0].cached_prompt_tokens == gen.count_prompt_tokens(p) - 1
    # The same prompt again: everything but the last token (run for the logits).
    gen.generate([PROMPT], params)
    assert gen.last_usage.prompt_tokens == 1


def test_the_cache_keeps_to_its_memory_cap(policy_model):
    per_token = 2 * policy_model.config.n_layer * policy_model.config.d_model * 4
    gen = EmbeddedGenerator(policy_model, prefix_cache_mb=200 * per_token / 2**20)  # 200 tokens
    plain = EmbeddedGenerator(policy_model)
    for seed in range(4):
        params = SamplingParams(n=4, temperature=1.0, max_new_tokens=30, seed=seed)
        prompts = [PROMPT, PROMPT + "84+72=57\n"]
        a, b = plain.generate(prompts, params), gen.generate(prompts, params)
        assert [c.text for g in a for c in g] == [c.text for g in b for c in g]
        assert gen.prefix_cache is not None and gen.prefix_cache.nbytes <= 200 * per_token
        assert gen.prefix_cache.tokens > 0


def test_each_thread_has_its_own_cache_and_a_run_starts_empty(policy_model, verifier):
    gen = EmbeddedGenerator(policy_model, prefix_cache_mb=4)
    gen.generate([PROMPT], SamplingParams(n=1, max_new_tokens=5, seed=0))
    assert gen.prefix_cache.match(gen.tokenizer.encode(PROMPT, bos=True)).length > 0
    seen = []
    worker = threading.Thread(target=lambda: seen.append(gen.prefix_cache.tokens))
    worker.start()
    worker.join()
    assert seen == [0]
    gen.reset_prefix_cache()
    assert gen.prefix_cache.tokens == 0
    # A strategy run resets it, so a run reports the same compute whatever ran before it.
    runs = [
        make_strategy("beam_search", max_step_tokens=24).run(PROMPT, gen, verifier, Budget(samples=4), 2)
        for _ in range(2)
    ]
    assert runs[0].compute == runs[1].compute and runs[0].candidates == runs[1].candidates


def test_a_negative_cache_size_is_refused(policy_model):
    with pytest.raises(ConfigError, match="prefix_cache_mb must be >= 0"):
        EmbeddedGenerator(policy_model, prefix_cache_mb=-1)


# --- tree searches on a cached generator -----------------------------------------------------------


@pytest.mark.parametrize("name", ["beam_search", "lookahead", "dvts", "mcts"])
def test_searches_find_the_same_paths_and_compute_fewer_prompt_tokens(flat_policy_model, verifier, name):
    params = {"max_step_tokens": 48, "n": 8}
    if name == "dvts":
        params["branching"] = 2
    results = []
    for cache_mb in (0.0, 8.0):
        gen = EmbeddedGenerator(flat_policy_model, prefix_cache_mb=cache_mb)
        results.append(make_strategy(name, **params).run(PROMPT, gen, verifier, Budget(samples=8), 3))
    plain, cached = results
    assert [c.text for c in plain.candidates] == [c.text for c in cached.candidates]
    assert plain.answer == cached.answer
    p, c = plain.compute, cached.compute
    assert c.policy_completion_tokens == p.policy_completion_tokens
    assert c.policy_prompt_tokens + c.policy_cached_tokens == p.policy_prompt_tokens
    assert c.policy_prompt_tokens < p.policy_prompt_tokens / 2
    assert c.policy_flops < p.policy_flops


def test_a_token_budget_holds_with_the_cache(flat_policy_model, verifier):
    gen = EmbeddedGenerator(flat_policy_model, prefix_cache_mb=8)
    for name in ("beam_search", "mcts"):
        budget = Budget(tokens=3000)
        result = make_strategy(name, max_step_tokens=48).run(PROMPT, gen, verifier, budget, 1)
        assert budget.exceeded_by(result.compute) == []
