"""Weak-verifier ensembles: the label model recovers member accuracies from agreement alone, the
ensemble beats its weak members, and it works as a Verifier inside the strategies."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import lively, tiny_model
from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from ponder.tasks import encode_number, parse_question
from ponder.verifiers.base import VerifierScore
from ponder.verifiers.ensemble import AgreementVerifier, EnsembleVerifier, Member, fit_label_model
from ponder.verifiers.likelihood import PolicyLikelihoodVerifier

ACCURACIES = [0.9, 0.75, 0.65, 0.6, 0.55]


def synthetic_votes(
    n: int, accuracies: list[float], prior: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """True labels and votes of independent members that are right with the given probabilities."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    right = rng.random((n, len(accuracies))) < np.array(accuracies)
    return y, np.where(right, y[:, None], 1 - y[:, None])


@pytest.mark.parametrize(("seed", "prior"), [(0, 0.5), (1, 0.3), (2, 0.7)])
def test_label_model_ranks_members_by_their_true_accuracy_without_labels(seed, prior):
    y, votes = synthetic_votes(3000, ACCURACIES, prior, seed)
    model = fit_label_model(votes)
    assert list(np.argsort(-model.accuracy)) == list(range(len(ACCURACIES)))
    assert model.accuracy == pytest.approx(ACCURACIES, abs=0.05)
    assert model.prior == pytest.approx(prior, abs=0.1)  # weakly identified with weak members
    assert list(np.argsort(-model.weights)) == list(range(len(ACCURACIES)))
    # The combined vote beats every member but the best, and majority vote.
    combined = (model.posterior(votes) >= 0.5).astype(int)
    acc = (combined == y).mean()
    majority = ((votes.mean(1) > 0.5).astype(int) == y).mean()
    member_acc = (votes == y[:, None]).mean(0)
    assert acc >= member_acc[0] - 0.01 and acc > member_acc[1:].max() and acc > majority


def test_label_model_handles_abstentions_and_refuses_bad_votes():
    y, votes = synthetic_votes(2000, [0.85, 0.7, 0.6], 0.5, 3)
    votes[np.random.default_rng(0).random(votes.shape) < 0.2] = -1
    model = fit_label_model(votes)
    assert model.accuracy[0] > model.accuracy[1] > model.accuracy[2]
    with pytest.raises(ConfigError, match="votes must be 1"):
        fit_label_model(np.array([[2, 0]]))
    with pytest.raises(ConfigError, match="shape"):
        fit_label_model(np.zeros((0, 3)))


# --- as a Verifier -------------------------------------------------------------------------------------

PROMPT = parse_question("48+27-13").prompt
RIGHT, WRONG = 62, 61


def solution(answer: int, tag: str) -> str:
    return f"84+72=57\n#{tag}\nA:{encode_number(answer, 2)}"


class NoisyVerifier:
    """Scores a right answer ~U(0.5, 1) and a wrong one ~U(0, 0.5), but flips with probability
    ``1 - accuracy`` (deterministic per solution text)."""

    def __init__(self, accuracy: float, salt: int) -> None:
        self.accuracy, self.salt, self.num_params = accuracy, salt, 10

    def score(self, prompts, solutions):
        out = []
        for s in solutions:
            rng = np.random.default_rng(int(hashlib.sha256(f"{self.salt}/{s}".encode()).hexdigest()[:8], 16))
            good = s.endswith(encode_number(RIGHT, 2))
            if rng.random() > self.accuracy:
                good = not good
            value = 0.5 + 0.5 * rng.random() if good else 0.5 * rng.random()
            out.append(VerifierScore(step_scores=[value], outcome=value, tokens=len(s)))
        return out


def test_ensemble_verifier_learns_which_member_to_trust_and_beats_the_weak_ones():
    members = [Member(f"v{a}", NoisyVerifier(a, i)) for i, a in enumerate(ACCURACIES)]
    ensemble = EnsembleVerifier(members)
    rng = np.random.default_rng(0)
    answers = np.where(rng.random(1500) < 0.5, RIGHT, WRONG)
    sols = [solution(int(a), str(i)) for i, a in enumerate(answers)]
    fit = ensemble.fit([PROMPT] * len(sols), sols)
    assert list(np.argsort(-fit.label_model.accuracy)) == list(range(len(members)))
    scores = ensemble.score([PROMPT] * len(sols), sols)
    truth = answers == RIGHT
    combined = np.array([s.outcome for s in scores]) >= 0.5
    ens_acc = (combined == truth).mean()
    single = [
        (np.array([s.outcome for s in m.verifier.score([PROMPT] * len(sols), sols)]) >= 0.5) for m in members
    ]
    single_acc = [(s == truth).mean() for s in single]
    assert ens_acc > max(single_acc[1:]) and ens_acc >= single_acc[0] - 0.02
    # Tokens: every member's; the score is one number in [0, 1] whichever aggregation reads it.
    assert sum(s.tokens for s in scores) == sum(len(s) for s in sols) * len(members)
    assert scores[0].aggregate("min") == scores[0].outcome


def test_unfitted_ensemble_fits_on_each_call_and_runs_inside_best_of_n():
    class Fixed:
        """A generator returning a fixed list of solutions."""

        num_params = 100

        def __init__(self, texts):
            self.texts = texts

        def generate(self, prompts, params):
            from ponder.backends.base import Completion

            return [
                [
                    Completion(self.texts[i % len(self.texts)], [0] * 5, [0.0] * 5, "eos", len(p) + 1)
                    for i in range(params.n)
                ]
                for p in prompts
            ]

    texts = [solution(RIGHT, str(i)) for i in range(5)] + [solution(WRONG, str(i)) for i in range(3)]
    ensemble = EnsembleVerifier(
        [
            Member("agree", AgreementVerifier(), threshold=0.5),
            Member("a", NoisyVerifier(0.8, 1)),
            Member("b", NoisyVerifier(0.7, 2)),
        ]
    )
    result = make_strategy("best_of_n").run(PROMPT, Fixed(texts), ensemble, Budget(samples=8), 0)
    assert result.answer == RIGHT and ensemble.fitted is None
    assert all(c.score is not None for c in result.candidates)


def test_agreement_verifier_scores_the_share_of_agreeing_answers_per_prompt():
    other = parse_question("12+5").prompt
    prompts = [PROMPT, PROMPT, PROMPT, PROMPT, other]
    sols = [
        solution(RIGHT, "a"),
        solution(RIGHT, "b"),
        solution(WRONG, "c"),
        "84+72=57\n",
        solution(WRONG, "d"),
    ]
    scores = [s.outcome for s in AgreementVerifier().score(prompts, sols)]
    assert scores == [0.5, 0.5, 0.25, 0.0, 1.0]


def test_policy_likelihood_verifier_scores_lines_with_the_policy():
    model = lively(tiny_model("lm", seed=0))
    v = PolicyLikelihoodVerifier(model)
    sol = "84+72=57\n57-31=26\nA:26"
    (score,) = v.score([PROMPT], [sol])
    assert len(score.step_scores) == 3 and all(0 < s <= 1 for s in score.step_scores)
    assert 0 < score.outcome <= 1
    assert score.tokens == v.count_tokens(PROMPT, sol) == len(PROMPT) + len(sol) + 1
    # Causal: a prefix gets the same step scores.
    (prefix,) = v.score([PROMPT], ["84+72=57\n"])
    assert prefix.step_scores == pytest.approx(score.step_scores[:1])
    (empty,) = v.score([PROMPT], [""])
    assert empty.step_scores == [] and empty.outcome == 0.0


def test_bad_ensembles_are_refused():
    with pytest.raises(ConfigError, match="at least one member"):
        EnsembleVerifier([])
    with pytest.raises(ConfigError, match="unique"):
        EnsembleVerifier([Member("a", AgreementVerifier()), Member("a", AgreementVerifier())])
    ens = EnsembleVerifier([Member("a", AgreementVerifier())])
    with pytest.raises(ConfigError, match="not fitted"):
        ens.combine(np.zeros((2, 1)))
    with pytest.raises(ConfigError, match="shape"):
        ens.fit_scores(np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="needs a verifier with an outcome head"):
        EnsembleVerifier([Member("x", NoOutcome(), aggregation="orm")]).score([PROMPT], ["A:26"])


class NoOutcome:
    num_params = 1

    def score(self, prompts, solutions):
        return [VerifierScore(step_scores=[0.5]) for _ in solutions]
