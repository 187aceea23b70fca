"""Batched generation with the embedded policy (tiny random models): shapes, determinism,
padding, stopping, log-probabilities, limits and usage accounting."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from ponder.backends.base import Completion, Generator, SamplingParams
from ponder.backends.embedded import EmbeddedGenerator, sample_tokens
from ponder.errors import ConfigError, ContextLengthError

PROMPTS = ["Q:84+72-31\n", "Q:1+2\n", "Q:5000+1234-99+7\n"]
LONG = "Q:" + "+".join(["12"] * 20) + "\n"  # much longer than any of PROMPTS


def greedy(n: int = 1, max_new_tokens: int = 24, **kw: object) -> SamplingParams:
    return SamplingParams(n=n, temperature=0.0, max_new_tokens=max_new_tokens, **kw)


def texts(groups: list[list[Completion]]) -> list[list[str]]:
    return [[c.text for c in group] for group in groups]


def model_logprobs(generator: EmbeddedGenerator, prompt: str, completion: Completion) -> torch.Tensor:
    """Log-probabilities of a completion's tokens from one plain causal forward over the whole text."""
    tok = generator.tokenizer
    prompt_ids = tok.encode(prompt, bos=True)
    ids = torch.tensor([prompt_ids + completion.token_ids])
    with torch.no_grad():
        logits = generator.model(ids)[0, len(prompt_ids) - 1 : -1].clone()
    logits[:, [tok.pad_id, tok.bos_id]] = float("-inf")
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)


def test_embedded_generator_is_a_generator(generator):
    assert isinstance(generator, Generator)
    assert generator.num_params == generator.model.num_params() > 0
    assert generator.context_length == 128


def test_a_reward_model_is_refused_as_policy():
    with pytest.raises(ConfigError, match="needs a policy model"):
        EmbeddedGenerator(tiny_model("reward"))


def test_one_group_of_n_completions_per_prompt(generator):
    groups = generator.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, seed=0))
    assert len(groups) == len(PROMPTS)
    for prompt, group in zip(PROMPTS, groups):
        assert len(group) == 3
        for c in group:
            assert isinstance(c, Completion)
            assert c.prompt_tokens == len(prompt) + 1  # with <bos>
            assert c.completion_tokens == len(c.token_ids) == len(c.text) == len(c.logprobs)
            assert generator.tokenizer.decode(c.token_ids) == c.text
            assert c.finish_reason in ("stop", "eos", "length")


def test_greedy_is_deterministic_and_the_same_for_every_sample(generator):
    a = generator.generate(PROMPTS, greedy(n=4))
    b = generator.generate(PROMPTS, greedy(n=4, seed=123))
    assert texts(a) == texts(b)
    for group in a:
        assert len({c.text for c in group}) == 1
        assert len({tuple(c.logprobs) for c in group}) == 1
    # The tiny model is not degenerate: different prompts give different continuations.
    assert len({group[0].text for group in a}) == len(PROMPTS)


def test_greedy_picks_the_most_likely_token_every_time(generator):
    prompt = PROMPTS[0]
    c = generator.generate([prompt], greedy())[0][0]
    tok = generator.tokenizer
    prompt_ids = tok.encode(prompt, bos=True)
    with torch.no_grad():
        logits = generator.model(torch.tensor([prompt_ids + c.token_ids]))[0, len(prompt_ids) - 1 : -1]
    logits[:, [tok.pad_id, tok.bos_id]] = float("-inf")
    assert logits.argmax(-1).tolist() == c.token_ids


def test_same_seed_same_samples_different_seed_different(generator):
    params = dict(n=6, temperature=1.0, max_new_tokens=20)
    a = generator.generate(PROMPTS, SamplingParams(seed=7, **params))
    b = generator.generate(PROMPTS, SamplingParams(seed=7, **params))
    c = generator.generate(PROMPTS, SamplingParams(seed=8, **params))
    assert texts(a) == texts(b)
    assert [[x.logprobs for x in g] for g in a] == [[x.logprobs for x in g] for g in b]
    assert texts(a) != texts(c)
    # Samples of one prompt differ from each other.
    assert all(len({x.text for x in group}) > 1 for group in a)
    # Without a seed, two calls draw different samples.
    unseeded = [texts(generator.generate(PROMPTS, SamplingParams(**params))) for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def test_left_padding_does_not_change_greedy_output(generator):
    for prompt in PROMPTS:
        alone = generator.generate([prompt], greedy())[0][0]
        batched = generator.generate([LONG, prompt, LONG], greedy(n=2))
        for c in batched[1]:
            assert c.text == alone.text
            assert c.finish_reason == alone.finish_reason
            torch.testing.assert_close(
                torch.tensor(c.logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=0
            )
        # And the long prompt is unaffected by sharing its batch.
        assert batched[0][0].text == generator.generate([LONG], greedy())[0][0].text


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (1.7, 0.8)])
def test_logprobs_are_the_models_own(flat_generator, temperature, top_p):
    """Log-probs match a full causal forward over prompt + completion, whatever the temperature
    and top-p, including rows that kept going after others in the batch finished and were dropped."""
    prompts = PROMPTS[:2]
    params = SamplingParams(
        n=8, temperature=temperature, top_p=top_p, max_new_tokens=40, stop_at_step=True, seed=1
    )
    groups = flat_generator.generate(prompts, params)
    finished_early = 0
    for prompt, group in zip(prompts, groups):
        for c in group:
            assert len(c.logprobs) == c.completion_tokens
            assert all(lp <= 0.0 for lp in c.logprobs)
            if c.completion_tokens:
                expected = model_logprobs(flat_generator, prompt, c)
                torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)
            finished_early += c.finish_reason != "length"
            assert c.sum_logprob == pytest.approx(sum(c.logprobs))
    assert 0 < finished_early < 16  # some rows were dropped while others still ran


def test_stop_at_step_stops_at_the_step_delimiter(flat_generator):
    groups = flat_generator.generate(
        ["Q:84+72-31\n"], SamplingParams(n=24, max_new_tokens=50, stop_at_step=True, seed=0)
    )
    reasons = set()
    for c in groups[0]:
        reasons.add(c.finish_reason)
        if c.finish_reason == "stop":
            assert c.text.endswith("\n") and c.text.count("\n") == 1
            assert c.token_ids[-1] == flat_generator.step_id
        else:
            assert "\n" not in c.text
        if c.finish_reason == "length":
            assert c.completion_tokens == 50
        if c.finish_reason == "eos":
            assert c.completion_tokens < 50
            assert flat_generator.tokenizer.eos_id not in c.token_ids
    assert reasons == {"stop", "eos", "length"}


def test_without_stop_at_step_generation_runs_past_delimiters(flat_generator):
    groups = flat_generator.generate(["Q:84+72-31\n"], SamplingParams(n=24, max_new_tokens=50, seed=0))
    assert all(c.finish_reason in ("eos", "length") for c in groups[0])
    assert any("\n" in c.text[:-1] for c in groups[0])


def test_max_new_tokens_is_respected(generator, flat_generator):
    for gen in (generator, flat_generator):
        groups = gen.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=7, seed=2))
        for group in groups:
            for c in group:
                assert c.completion_tokens <= 7
                assert (c.completion_tokens == 7) == (c.finish_reason == "length")
    assert generator.generate(PROMPTS, greedy(max_new_tokens=1))[0][0].completion_tokens == 1


def test_generation_stops_at_the_end_of_the_context(generator):
    context = generator.context_length
    prompt = "Q:" + "1" * (context - 8) + "\n"  # context - 4 tokens with <bos>
    c = generator.generate([prompt], greedy(max_new_tokens=100))[0][0]
    assert c.prompt_tokens == context - 4
    # The lively model does not end early, so it fills the context exactly.
    assert c.completion_tokens == 4 and c.finish_reason == "length"
    # A prompt one short of the context leaves room for one token.
    edge = generator.generate(["x" * (context - 2)], greedy())[0][0]
    assert edge.completion_tokens == 1


def test_a_prompt_longer_than_the_context_is_refused(generator):
    too_long = "x" * (generator.context_length - 1)  # with <bos> it fills the context: no room left
    with pytest.raises(ContextLengthError, match=r"prompt 1 is 128 tokens long.*context is 128"):
        generator.generate(["Q:1+2\n", too_long], greedy())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SamplingParams(n=0), "n must be at least 1, got 0"),
        (SamplingParams(n=-2), "n must be at least 1, got -2"),
        (SamplingParams(temperature=-0.5), "temperature must be >= 0, got -0.5"),
        (SamplingParams(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
        (SamplingParams(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (SamplingParams(max_new_tokens=0), "max_new_tokens must be at least 1, got 0"),
    ],
)
def test_bad_sampling_parameters_are_refused(generator, params, message):
    with pytest.raises(ConfigError, match=message):
        generator.generate(["Q:1+2\n"], params)


def test_bad_prompts_are_refused(generator):
    with pytest.raises(ConfigError, match="no prompts"):
        generator.generate([], greedy())
    with pytest.raises(ConfigError, match="'é'"):
        generator.generate(["Q:1+2 café\n"], greedy())


def test_usage_counts_each_prompt_once(generator):
    n, max_new = 4, 9
    groups = generator.generate(PROMPTS, SamplingParams(n=n, temperature=0.0, max_new_tokens=max_new))
    usage = generator.last_usage
    assert usage.prompt_tokens == sum(len(p) + 1 for p in PROMPTS)  # not n times
    assert usage.completion_tokens == sum(c.completion_tokens for g in groups for c in g)
    assert all(c.finish_reason == "length" for g in groups for c in g)
    # Prefill of the padded prompts, then one decode position per live row per step but the last.
    padded = len(PROMPTS) * max(len(p) + 1 for p in PROMPTS)
    assert usage.forward_tokens == padded + (max_new - 1) * len(PROMPTS) * n
    # A later call replaces it.
    generator.generate(PROMPTS[:1], greedy(n=2, max_new_tokens=3))
    assert generator.last_usage.prompt_tokens == len(PROMPTS[0]) + 1
    assert generator.last_usage.completion_tokens == 6


def test_tiny_top_p_is_greedy(generator):
    expected = texts(generator.generate(PROMPTS, greedy(n=3)))
    for seed in (0, 1):
        params = SamplingParams(n=3, temperature=1.0, top_p=1e-6, max_new_tokens=24, seed=seed)
        assert texts(generator.generate(PROMPTS, params)) == expected


def test_sample_tokens_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(3000, 4)
    gen = torch.Generator().manual_seed(0)
    drawn = sample_tokens(logits, temperature=1.0, top_p=0.7, generator=gen)
    counts = torch.bincount(drawn, minlength=4).tolist()
    assert counts[2] == counts[3] == 0
    assert counts[0] / 3000 == pytest.approx(0.5 / 0.8, abs=0.04)
    # Without top-p every token turns up, in proportion.
    drawn = sample_tokens(logits, temperature=1.0, top_p=1.0, generator=gen)
    freq = torch.bincount(drawn, minlength=4) / 3000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.04, rtol=0)
    # Temperature 0 is argmax; a high temperature flattens the distribution.
    assert sample_tokens(logits, 0.0, 1.0, gen).tolist() == [0] * 3000
    hot = torch.bincount(sample_tokens(logits, 50.0, 1.0, gen), minlength=4) / 3000
    assert hot.min() > 0.2
