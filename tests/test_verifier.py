"""The embedded verifier (tiny random reward model): step positions, scores, prefix consistency,
aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_model
from ponder.errors import ConfigError, ContextLengthError
from ponder.tasks import make_split
from ponder.verifiers.base import AGGREGATIONS, Verifier, VerifierScore, aggregate_steps
from ponder.verifiers.embedded import EmbeddedVerifier, encode_for_scoring

PROMPT = "Q:84+72-31\n"
SOLUTION = "84+72=57\n57-31=26\nA:26"

# --- step positions -----------------------------------------------------------------------------


def test_step_ends_of_a_full_solution(tokenizer):
    ids, ends = encode_for_scoring(tokenizer, "Q\n", "a\nb\nA:c")
    assert ids == tokenizer.encode("Q\n", bos=True) + tokenizer.encode("a\nb\nA:c")
    # <bos> Q \n | a \n b \n A : c  -> the two delimiters and the answer's last character.
    assert ends == [4, 6, 9]
    assert [tokenizer.itos[ids[e]] for e in ends] == ["\n", "\n", "c"]


def test_step_ends_of_a_partial_solution(tokenizer):
    ids, ends = encode_for_scoring(tokenizer, "Q\n", "a\nb\n")
    assert len(ids) == 7 and ends == [4, 6]


def test_blank_lines_are_not_steps(tokenizer):
    _, ends = encode_for_scoring(tokenizer, "Q\n", "\na\n\n\nb\n\nA:c\n")
    ids = tokenizer.encode("Q\n", bos=True) + tokenizer.encode("\na\n\n\nb\n\nA:c\n")
    assert len(ends) == 3
    assert [tokenizer.itos[ids[e - 1]] for e in ends] == ["a", "b", "c"]
    assert encode_for_scoring(tokenizer, "Q\n", "")[1] == []
    assert encode_for_scoring(tokenizer, "Q\n", "\n\n")[1] == []


def test_step_ends_of_a_reference_solution(tokenizer):
    for problem in make_split("dev", levels=[1, 3], n_per_level=3, seed=0):
        ids, ends = encode_for_scoring(tokenizer, problem.prompt, problem.solution)
        assert len(ends) == len(problem.steps) + 1
        assert ends[-1] == len(ids) - 1
        assert all(ids[e] == tokenizer.token_of("\n") for e in ends[:-1])


# --- scoring ------------------------------------------------------------------------------------


def test_embedded_verifier_is_a_verifier(verifier):
    assert isinstance(verifier, Verifier)
    assert verifier.num_params == verifier.model.num_params() > 0


def test_a_policy_model_is_refused_as_verifier():
    with pytest.raises(ConfigError, match="needs a reward model"):
        EmbeddedVerifier(tiny_model("lm"))


def test_scores_are_probabilities_one_per_step(verifier, tokenizer):
    solutions = [SOLUTION, "84+72=57\n", "", "garbage", "84+72=57\n\n57-31=26\nA:26\n"]
    scores = verifier.score([PROMPT] * len(solutions), solutions)
    assert len(scores) == len(solutions)
    assert [len(s.step_scores) for s in scores] == [3, 1, 0, 1, 3]
    for sol, s in zip(solutions, scores):
        assert isinstance(s, VerifierScore)
        assert all(0.0 <= x <= 1.0 for x in s.step_scores)
        assert s.outcome is not None and 0.0 <= s.outcome <= 1.0
        assert s.tokens == len(encode_for_scoring(tokenizer, PROMPT, sol)[0])
    # The random reward model is not constant: different texts score differently.
    assert len({round(x, 6) for s in scores for x in s.step_scores}) > 3


def test_scores_match_the_reward_head_at_step_ends(verifier, tokenizer):
    ids, ends = encode_for_scoring(tokenizer, PROMPT, SOLUTION)
    with torch.no_grad():
        probs = torch.sigmoid(verifier.model(torch.tensor([ids])))[0]
    s = verifier.score([PROMPT], [SOLUTION])[0]
    torch.testing.assert_close(torch.tensor(s.step_scores), probs[ends, 0], atol=1e-5, rtol=0)
    assert s.outcome == pytest.approx(float(probs[-1, 1]), abs=1e-5)


def test_prefix_scores_equal_the_full_solutions_first_scores(verifier):
    problems = make_split("test", levels=[2, 4], n_per_level=3, seed=1)
    prompts, solutions, n_steps = [], [], []
    for p in problems:
        lines = p.solution.split("\n")
        for k in range(1, len(lines) + 1):
            prompts.append(p.prompt)
            solutions.append("\n".join(lines[:k]) + ("\n" if k < len(lines) else ""))
            n_steps.append(k)
    # Shuffle so prefixes and full solutions land in different batches (batch_size is 4).
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(0)).tolist()
    scores = verifier.score([prompts[i] for i in order], [solutions[i] for i in order])
    by_key = {(prompts[i], solutions[i]): s for i, s in zip(order, scores)}
    for p in problems:
        full = by_key[(p.prompt, p.solution)].step_scores
        assert len(full) == len(p.steps) + 1
        lines = p.solution.split("\n")
        for k in range(1, len(lines)):
            partial = by_key[(p.prompt, "\n".join(lines[:k]) + "\n")].step_scores
            assert len(partial) == k
            torch.testing.assert_close(torch.tensor(partial), torch.tensor(full[:k]), atol=1e-5, rtol=0)


def test_scores_do_not_depend_on_the_batch(verifier):
    texts = [SOLUTION, "84+72=57\n", "A:1", "84+72=57\n57-31=26\n" * 3 + "A:26"]
    together = verifier.score([PROMPT] * 4, texts)
    for text, s in zip(texts, together):
        alone = verifier.score([PROMPT], [text])[0]
        torch.testing.assert_close(
            torch.tensor(alone.step_scores), torch.tensor(s.step_scores), atol=1e-5, rtol=0
        )
        assert alone.outcome == pytest.approx(s.outcome, abs=1e-5)


def test_mismatched_prompts_and_solutions_are_refused(verifier):
    with pytest.raises(ConfigError, match="2 prompts but 1 solutions"):
        verifier.score([PROMPT, PROMPT], [SOLUTION])
    with pytest.raises(ConfigError, match="1 prompts but 0 solutions"):
        verifier.score([PROMPT], [])


def test_too_long_and_unencodable_text_is_refused(verifier):
    with pytest.raises(ContextLengthError, match="solution 1 is"):
        verifier.score([PROMPT, PROMPT], [SOLUTION, "1" * 200])
    with pytest.raises(ConfigError, match="'é'"):
        verifier.score([PROMPT], ["é"])


def test_nothing_to_score_gives_nothing(verifier):
    assert verifier.score([], []) == []


# --- aggregation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "expected"),
    [("last", 0.5), ("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("mean", (0.9 + 0.2 + 0.5) / 3)],
)
def test_aggregate_steps(how, expected):
    scores = [0.9, 0.2, 0.5]
    assert aggregate_steps(scores, how) == pytest.approx(expected)
    assert VerifierScore(step_scores=scores).aggregate(how) == pytest.approx(expected)
    assert aggregate_steps([], how) == 0.0


def test_aggregations_are_listed():
    assert set(AGGREGATIONS) == {"last", "min", "prod", "mean"}
    assert aggregate_steps([0.3, 0.7]) == 0.7  # "last" by default
    assert math.isclose(aggregate_steps([0.5] * 4, "prod"), 0.0625)


def test_unknown_aggregation_is_named():
    with pytest.raises(ConfigError, match="unknown step aggregation 'max'"):
        aggregate_steps([0.5], "max")
    with pytest.raises(ConfigError, match="unknown step aggregation 'orm'"):
        VerifierScore(step_scores=[]).aggregate("orm")  # type: ignore[arg-type]
