"""The shipped embedded models: they load offline, fit the size budget, and behave as the card says."""

from __future__ import annotations

import json

import pytest

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.eval.metrics import greedy_correct
from ponder.tasks import is_correct, make_split
from ponder.training.weights import WEIGHTS_DIR, policy_path, verifier_path
from ponder.verifiers.embedded import EmbeddedVerifier


@pytest.fixture(scope="module")
def policy() -> EmbeddedGenerator:
    return EmbeddedGenerator.load()


@pytest.fixture(scope="module")
def verifier() -> EmbeddedVerifier:
    return EmbeddedVerifier.load()


def test_shipped_files_are_present_and_small():
    for path in (policy_path(), verifier_path()):
        assert path.is_file(), path
        assert path.stat().st_size < 20e6
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    assert "ponder train all" in card and "AUROC" in card
    metrics = json.loads((WEIGHTS_DIR / "card.json").read_text())["metrics"]
    assert set(metrics["greedy"]) == {"1", "2", "3", "4", "5"}
    # Every figure of the card is the measured one, not a placeholder.
    assert "nan" not in card.lower() and "n/a" not in card
    greedy_l1 = f"| policy greedy | {metrics['greedy']['1']:.1%} |"
    assert greedy_l1 in card


def test_the_card_renders_the_same_from_its_json(tmp_path):
    from ponder.training.card import load_card, write_card

    metrics, info = load_card(WEIGHTS_DIR / "card.json")
    assert all(isinstance(level, int) for level in metrics.greedy)
    write_card(tmp_path / "MODEL_CARD.md", metrics, info)
    assert (tmp_path / "MODEL_CARD.md").read_text() == (WEIGHTS_DIR / "MODEL_CARD.md").read_text()


def test_policy_solves_easy_problems_and_not_all_hard_ones(policy):
    easy = make_split("test", levels=[1], n_per_level=40, seed=7)
    hard = make_split("test", levels=[5], n_per_level=40, seed=7)
    easy_acc = sum(greedy_correct(policy, easy)) / len(easy)
    hard_acc = sum(greedy_correct(policy, hard)) / len(hard)
    assert easy_acc >= 0.75
    assert hard_acc <= 0.6
    assert easy_acc > hard_acc + 0.2


def test_sampling_finds_right_answers_the_greedy_answer_misses(policy):
    problems = make_split("test", levels=[4], n_per_level=12, seed=3)
    greedy = greedy_correct(policy, problems)
    groups = policy.generate([p.prompt for p in problems], SamplingParams(n=32, temperature=1.0, seed=0))
    covered = [any(is_correct(p, c.text) for c in g) for p, g in zip(problems, groups)]
    assert sum(covered) > sum(greedy)


def _corrupt(solution: str) -> str:
    """Change the last digit of the first step's result (a wrong step the chain then carries)."""
    first, rest = solution.split("\n", 1)
    digit = first[-1]
    return first[:-1] + str((int(digit) + 3) % 10) + "\n" + rest


def test_prm_scores_a_wrong_step_lower_than_the_right_one(verifier):
    problems = make_split("test", levels=[3], n_per_level=20, seed=1)
    prompts = [p.prompt for p in problems]
    right = verifier.score(prompts, [p.solution.split("\n")[0] + "\n" for p in problems])
    wrong = verifier.score(prompts, [_corrupt(p.solution).split("\n")[0] + "\n" for p in problems])
    wins = sum(r.step_scores[0] > w.step_scores[0] for r, w in zip(right, wrong))
    assert wins >= 18


def test_orm_prefers_right_final_answers(verifier):
    problems = make_split("test", levels=[2], n_per_level=20, seed=2)
    prompts = [p.prompt for p in problems]
    right = verifier.score(prompts, [p.solution for p in problems])
    wrong = verifier.score(prompts, [_corrupt(p.solution) for p in problems])
    assert sum(r.outcome > w.outcome for r, w in zip(right, wrong)) >= 18


def test_best_of_n_by_the_prm_beats_a_random_pick_among_mixed_samples(policy, verifier):
    """Within one problem, the verifier ranks right samples above wrong ones far more often than not."""
    problems = make_split("test", levels=[1, 3], n_per_level=15, seed=11)
    groups = policy.generate([p.prompt for p in problems], SamplingParams(n=8, temperature=1.0, seed=5))
    wins = pairs = 0
    for problem, group in zip(problems, groups):
        ok = [is_correct(problem, c.text) for c in group]
        if all(ok) or not any(ok):
            continue
        scores = verifier.score([problem.prompt] * len(group), [c.text for c in group])
        for i, good in enumerate(ok):
            for j, bad in enumerate(ok):
                if good and not bad:
                    pairs += 1
                    wins += scores[i].outcome > scores[j].outcome
    assert pairs >= 20
    assert wins / pairs >= 0.7
