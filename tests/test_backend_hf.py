"""The transformers generator on tiny models built here from a config (random weights, a BPE
tokenizer trained on the spot): batching, shared prompt cache, log-probs, step stops, chat
templates, and strategies end to end."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

import ponder  # noqa: E402
from backend_stubs import LengthVerifier  # noqa: E402
from ponder.backends import Generator  # noqa: E402
from ponder.backends.base import SamplingParams  # noqa: E402
from ponder.backends.hf import HFGenerator  # noqa: E402
from ponder.backends.spec import load_generator  # noqa: E402
from ponder.errors import ConfigError, ContextLengthError  # noqa: E402
from ponder.strategies.budget import Budget  # noqa: E402
from ponder.strategies.registry import make_strategy  # noqa: E402
from ponder.tasks import parse_question  # noqa: E402
from tiny_hf import build_model  # noqa: E402

PROMPTS = [parse_question("48+27-13").prompt, "Q:1+2\n", "The answer is"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A chat model (ChatML template, <|im_end|> ends a turn)."""
    return build_model(tmp_path_factory.mktemp("hf") / "llama", arch="llama", chat=True)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A plain-text model: no chat template."""
    return build_model(tmp_path_factory.mktemp("hf") / "gpt2", arch="gpt2", chat=False)


@pytest.fixture(scope="module")
def chat_gen(llama_dir) -> HFGenerator:
    return load_generator(f"hf:{llama_dir}")


@pytest.fixture(scope="module")
def text_gen(gpt2_dir) -> HFGenerator:
    return load_generator(f"hf:{gpt2_dir}")


def test_loads_from_a_spec(chat_gen, text_gen, llama_dir):
    for gen in (chat_gen, text_gen):
        assert isinstance(gen, HFGenerator) and isinstance(gen, Generator)
        total = sum(p.numel() for p in gen.model.parameters())
        assert 0 < gen.num_params < total and gen.context_length == 256
    assert chat_gen.chat and not text_gen.chat
    plain = load_generator(f"hf:{llama_dir}?chat=false&share_prompt_cache=0")
    assert not plain.chat and not plain.share_prompt_cache


def recompute_logprobs(gen: HFGenerator, prompt_ids: list[int], tokens: list[int]) -> list[float]:
    ids = torch.tensor([prompt_ids + tokens])
    with torch.no_grad():
        logits = gen.model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return [float(lp[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(tokens)]


@pytest.mark.parametrize("which", ["chat_gen", "text_gen"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_batched_left_padded_generation_reports_the_models_own_logprobs(request, which, temperature):
    gen: HFGenerator = request.getfixturevalue(which)
    groups = gen.generate(PROMPTS, SamplingParams(n=2, temperature=temperature, max_new_tokens=12, seed=4))
    assert [len(g) for g in groups] == [2, 2, 2]
    for prompt, group in zip(PROMPTS, groups):
        prompt_ids = gen.encode(gen.render(prompt))
        for c in group:
            assert c.prompt_tokens == len(prompt_ids)
            assert c.completion_tokens == len(c.token_ids) == len(c.logprobs) <= 12
            assert c.text == gen.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            assert c.finish_reason in ("eos", "length")
            if c.finish_reason == "length":
                assert c.completion_tokens == 12
            # Each prompt was padded to the batch's longest; the log-probs are those of the
            # unpadded prompt, before temperature.
            expected = recompute_logprobs(gen, prompt_ids, c.token_ids)
            assert c.logprobs == pytest.approx(expected, abs=1e-4)
    if temperature > 0:  # (greedy samples are decoded once and copied)
        assert gen.last_usage.completion_tokens == sum(c.completion_tokens for g in groups for c in g)


@pytest.mark.parametrize("which", ["chat_gen", "text_gen"])
def test_samples_share_the_prompt_cache_without_changing_results(request, which):
    gen: HFGenerator = request.getfixturevalue(which)
    # A tiny temperature samples the greedy tokens, through the sampling (shared-cache) path.
    params = SamplingParams(n=3, temperature=1e-4, max_new_tokens=10, seed=0)
    shared = gen.generate(PROMPTS[:2], params)
    gen.share_prompt_cache = False
    try:
        separate = gen.generate(PROMPTS[:2], params)
    finally:
        gen.share_prompt_cache = True
    greedy = gen.generate(PROMPTS[:2], SamplingParams(n=1, temperature=0, max_new_tokens=10))
    for a, b, g in zip(shared, separate, greedy):
        for ca, cb in zip(a, b):
            assert ca.token_ids == cb.token_ids == g[0].token_ids
            assert ca.logprobs == pytest.approx(cb.logprobs, abs=1e-4)


def test_only_ponders_sampling_parameters_apply(llama_dir):
    gen = load_generator(f"hf:{llama_dir}")
    # A model's generation_config.json may carry its own knobs; they must not leak in.
    gen.model.generation_config.update(top_k=1, repetition_penalty=5.0, no_repeat_ngram_size=1)
    greedy = gen.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=10))[0][0]
    prompt_ids = gen.encode(gen.render(PROMPTS[0]))
    with torch.no_grad():
        logits = gen.model(input_ids=torch.tensor([prompt_ids + greedy.token_ids])).logits[0]
    argmax = logits[len(prompt_ids) - 1 : -1].argmax(-1).tolist()
    assert greedy.token_ids == argmax[: len(greedy.token_ids)]
    sampled = gen.generate(PROMPTS[:1], SamplingParams(n=6, temperature=1.0, max_new_tokens=8, seed=0))[0]
    assert len({tuple(c.token_ids) for c in sampled}) > 1  # top_k=1 would make them all alike


def test_seeded_sampling_is_reproducible(chat_gen):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=11)
    first = [c.token_ids for c in chat_gen.generate(PROMPTS[:1], params)[0]]
    again = [c.token_ids for c in chat_gen.generate(PROMPTS[:1], params)[0]]
    other = [
        c.token_ids
        for c in chat_gen.generate(PROMPTS[:1], SamplingParams(n=4, max_new_tokens=10, seed=12))[0]
    ]
    assert first == again and first != other
    assert len({tuple(t) for t in first}) > 1  # samples differ


@pytest.mark.parametrize("which", ["chat_gen", "text_gen"])
def test_step_wise_generation_stops_after_the_delimiter(request, which):
    gen: HFGenerator = request.getfixturevalue(which)
    group = gen.generate(PROMPTS[:1], SamplingParams(n=8, max_new_tokens=8, stop_at_step=True, seed=2))[0]
    reasons = {c.finish_reason for c in group}
    assert "stop" in reasons
    for c in group:
        assert c.text.count("\n") == (c.finish_reason == "stop")
        assert c.text.endswith("\n") == (c.finish_reason == "stop")
        assert gen.tokenizer.decode(c.token_ids, skip_special_tokens=True).startswith(c.text)
        assert len(c.logprobs) == c.completion_tokens
        if c.finish_reason == "length":
            assert c.completion_tokens == 8


def test_stop_strings_and_top_logprobs(text_gen):
    params = SamplingParams(n=6, max_new_tokens=8, seed=2)
    stepped = text_gen.generate(
        PROMPTS[:1], SamplingParams(n=6, max_new_tokens=8, seed=2, stop_at_step=True)
    )[0]
    stopped = text_gen.generate(PROMPTS[:1], SamplingParams(n=6, max_new_tokens=8, seed=2, stop=("\n",)))[0]
    assert [c.text for c in stepped] == [c.text for c in stopped]
    assert any(c.finish_reason == "stop" for c in stopped)
    free = text_gen.generate(PROMPTS[:1], params)[0]
    assert all(c.top_logprobs is None for c in free)
    greedy = text_gen.generate(PROMPTS[:2], SamplingParams(temperature=0, max_new_tokens=6, top_logprobs=3))
    for group in greedy:
        c = group[0]
        assert len(c.top_logprobs) == c.completion_tokens
        for entry, lp, tok in zip(c.top_logprobs, c.logprobs, c.token_ids):
            assert 1 <= len(entry) <= 3
            assert max(entry.values()) == pytest.approx(lp, abs=1e-5)  # greedy: the emitted token leads
            assert text_gen.tokenizer.decode([tok]) in entry


def test_chat_models_continue_the_assistant_turn(chat_gen, llama_dir):
    question, partial = PROMPTS[0], "84+72=57\n"
    rendered = chat_gen.render(question)
    assert rendered.startswith("<|im_start|>user\n" + question) and rendered.endswith(
        "<|im_start|>assistant\n"
    )
    plain = HFGenerator(chat_gen.model, chat_gen.tokenizer, chat=False)
    params = SamplingParams(temperature=0, max_new_tokens=10)
    via_chat = chat_gen.generate_continuations([question], [partial], params)[0][0]
    via_text = plain.generate([rendered + partial], params)[0][0]
    assert via_chat.token_ids == via_text.token_ids and via_chat.prompt_tokens == via_text.prompt_tokens
    assert chat_gen.count_prompt_tokens(question) >= len(chat_gen.encode(rendered))


def test_context_window_is_enforced(text_gen):
    with pytest.raises(ContextLengthError, match="context is 256 tokens"):
        text_gen.generate(["7" * 2000])
    long = "Q:1+2\n" * 40
    room = text_gen.context_length - len(text_gen.encode(long))
    c = text_gen.generate([long], SamplingParams(temperature=0, max_new_tokens=500))[0][0]
    assert 0 < room < 500 and c.completion_tokens <= room


def test_bad_directories_are_config_errors(tmp_path, gpt2_dir):
    with pytest.raises(ConfigError, match="is not a directory"):
        load_generator(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="no config.json"):
        load_generator(f"hf:{tmp_path}")
    with pytest.raises(ConfigError, match="has no chat template"):
        load_generator(f"hf:{gpt2_dir}?chat=true")
    with pytest.raises(ConfigError, match="unknown option 'beams' for the hf backend"):
        load_generator(f"hf:{gpt2_dir}?beams=3")
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_generator(f"hf:{gpt2_dir}", dtype="float99")


class Spy:
    """Passes calls through to a generator and records the continuations it was asked for."""

    def __init__(self, gen: HFGenerator) -> None:
        self.gen = gen
        self.responses: list[str] = []
        self.completion_tokens = 0

    @property
    def num_params(self) -> int:
        return self.gen.num_params

    @property
    def context_length(self) -> int:
        return self.gen.context_length

    def count_prompt_tokens(self, prompt: str) -> int:
        return self.gen.count_prompt_tokens(prompt)

    def generate(self, prompts, params):
        return self.generate_continuations(prompts, [""] * len(prompts), params)

    def generate_continuations(self, questions, responses, params):
        self.responses.extend(responses)
        out = self.gen.generate_continuations(questions, responses, params)
        self.completion_tokens += sum(c.completion_tokens for g in out for c in g)
        return out


@pytest.mark.parametrize(
    "strategy, params",
    [
        ("greedy", {"max_new_tokens": 16}),
        ("majority", {"max_new_tokens": 16}),
        ("best_of_n", {"max_new_tokens": 16}),
        ("beam_search", {"beam_width": 2, "max_rounds": 3, "max_step_tokens": 8, "max_new_tokens": 16}),
        ("dvts", {"branching": 2, "max_rounds": 3, "max_step_tokens": 8, "max_new_tokens": 16}),
    ],
)
def test_strategies_run_end_to_end(chat_gen, strategy, params):
    spy = Spy(chat_gen)
    budget = Budget(samples=4)
    result = make_strategy(strategy, **params).run(PROMPTS[0], spy, LengthVerifier(), budget, seed=1)
    assert not budget.exceeded_by(result.compute)
    assert result.compute.policy_completion_tokens == spy.completion_tokens > 0
    assert result.candidates
    if strategy in ("beam_search", "dvts"):
        # Later rounds continue paths as the model's own partial answer.
        assert any(r for r in spy.responses) and "round 2" in " ".join(result.trace)


def test_token_budget_is_kept(chat_gen):
    budget = Budget(tokens=300)
    result = make_strategy("majority", max_new_tokens=16).run(PROMPTS[0], chat_gen, None, budget, seed=0)
    assert result.compute.policy_tokens <= 300 and result.compute.samples >= 2


def test_solve_runs_on_an_hf_backend(llama_dir):
    result = ponder.solve(
        "48+27-13", strategy="majority", samples=2, backend=f"hf:{llama_dir}", max_new_tokens=8
    )
    assert result.compute.samples == 2 and result.compute.policy_flops > 0
