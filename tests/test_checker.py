"""The step checker: corrected training targets, its training loop, and how it scores steps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.errors import ConfigError
from ponder.tasks import is_correct, make_split
from ponder.tasks.answers import expected_chars, first_slip
from ponder.training.model import ModelConfig, TinyTransformer, load_model, save_model
from ponder.training.tokenizer import CharTokenizer
from ponder.training.train_checker import CheckerTrainConfig, corrected_example, train_checker
from ponder.training.weights import checker_path
from ponder.verifiers.embedded import EmbeddedVerifier, encode_for_scoring, load_embedded_verifier
from ponder.verifiers.likelihood import CheckerLMVerifier
from ponder.verifiers.spec import load_verifier


def _quiet(*_: object) -> None:
    pass


@pytest.fixture
def tiny_policy_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "policy.safetensors"
    save_model(TinyTransformer(ModelConfig(d_model=32, n_layer=2, n_head=2, max_seq_len=256)), path)
    return path


def _record(problem, solution: str) -> dict:
    return {
        "question": problem.question,
        "prompt": problem.prompt,
        "level": problem.level,
        "solution": solution,
        "outcome": float(is_correct(problem, solution)),
    }


def _with_slip(solution: str, at: int) -> str:
    return solution[:at] + str((int(solution[at]) + 1) % 10) + solution[at + 1 :]


def test_corrected_example_targets_the_right_character_where_the_policy_slipped():
    tok = CharTokenizer()
    problem = make_split("train", levels=[3], n_per_level=1)[0]
    slip_at = problem.solution.index("=") + 2  # the second result digit of step 1
    solution = _with_slip(problem.solution, slip_at)
    ids, targets = corrected_example(_record(problem, solution), tok)
    start = len(tok.encode(problem.prompt, bos=True))
    assert ids == tok.encode(problem.prompt, bos=True) + tok.encode(solution)
    assert len(targets) == len(ids)
    assert targets[: start - 1] == [-100] * (start - 1)  # no loss on the prompt
    # Position t predicts character t + 1: the slipped digit's target is the reference digit.
    assert targets[start - 1 + slip_at] == tok.token_of(problem.solution[slip_at])
    assert ids[start + slip_at] != targets[start - 1 + slip_at]
    # Elsewhere the target is the character written, and the text ends after the answer line.
    wanted = [tok.token_of(c) for c in expected_chars(problem, solution)]
    assert targets[start - 1 : -1] == wanted
    # The written text departs from the targets at the slip and where step 2 copies the right
    # value instead of the written one as its left operand (a careful solver chains from the text).
    step2 = solution.index("\n") + 1
    departs = [j for j, (a, b) in enumerate(zip(tok.encode(solution), wanted)) if a != b]
    assert departs == [slip_at, step2 + 1]
    assert targets[-1] == tok.eos_id
    # A sample cut short gets no end-of-text target.
    assert corrected_example(_record(problem, solution[:-1]), tok)[1][-1] == -100


def test_checker_trains_resumes_and_refuses_another_configuration(tmp_path, tiny_policy_file):
    problems = make_split("train", levels=[1, 2], n_per_level=4)
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as f:
        for p in problems:
            rows = [_record(p, p.solution), _record(p, _with_slip(p.solution, 0))]
            f.write(json.dumps({"question": p.question, "samples": rows}) + "\n")
    cfg = CheckerTrainConfig(
        samples=str(samples),
        init_from=str(tiny_policy_file),
        out_dir=str(tmp_path / "c"),
        steps=4,
        batch_size=4,
        ckpt_every=2,
    )
    first = train_checker(cfg, log=_quiet)
    weights = load_model(first)[0].state_dict()
    assert not torch.equal(
        weights["tok_emb.weight"], load_model(tiny_policy_file)[0].state_dict()["tok_emb.weight"]
    )
    # Rerunning a finished run resumes at its last step and trains nothing more.
    lines: list[str] = []
    again = load_model(train_checker(cfg, log=lines.append))[0].state_dict()
    assert any("resuming from step 4" in line for line in lines)
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    # The weights load as a step checker through the embedded verifier spec.
    verifier = load_verifier(f"embedded:{first}")
    assert isinstance(verifier, CheckerLMVerifier)
    assert len(verifier.score([problems[0].prompt], [problems[0].solution])[0].step_scores) == 3
    with pytest.raises(ConfigError, match="another checker configuration"):
        train_checker(CheckerTrainConfig(**{**cfg.__dict__, "lr": 1e-3}), log=_quiet)


def test_checker_without_samples_or_with_bad_settings_is_a_clear_error(tmp_path, tiny_policy_file):
    cfg = CheckerTrainConfig(
        samples=str(tmp_path / "none.jsonl"), init_from=str(tiny_policy_file), out_dir=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="--label checked"):
        train_checker(cfg, log=_quiet)
    with pytest.raises(ConfigError, match="no policy weights"):
        train_checker(CheckerTrainConfig(init_from=str(tmp_path / "missing.safetensors")), log=_quiet)
    broken = tmp_path / "broken.jsonl"
    no_prompt = {"question": "1+2", "solution": "x"}
    broken.write_text(json.dumps({"question": "1+2", "samples": [no_prompt]}) + "\n")
    with pytest.raises(ConfigError, match="sample 0 has no prompt"):
        train_checker(CheckerTrainConfig(samples=str(broken), init_from=str(tiny_policy_file)), log=_quiet)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        CheckerTrainConfig(steps=0)


def test_step_scores_are_the_lowest_token_probability_so_far(tiny_policy_file):
    model = load_model(tiny_policy_file)[0].eval()
    verifier = CheckerLMVerifier(model)
    tok = CharTokenizer()
    problem = make_split("dev", levels=[2], n_per_level=1)[0]
    [score] = verifier.score([problem.prompt], [problem.solution])
    ids, ends = encode_for_scoring(tok, problem.prompt, problem.solution)
    start = len(tok.encode(problem.prompt, bos=True))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).float(), -1)[0]
    token_lp = [float(logp[t - 1, ids[t]]) for t in range(start, len(ids))]
    want = [math.exp(min(token_lp[: end - start + 1])) for end in ends]
    assert score.step_scores == pytest.approx(want, rel=1e-5)
    assert score.outcome == pytest.approx(want[-1], rel=1e-5)
    assert all(a >= b for a, b in zip(score.step_scores, score.step_scores[1:]))


def test_embedded_spec_names_the_checker_the_prm_or_weights(tiny_policy_file):
    assert isinstance(load_verifier("embedded+prm"), EmbeddedVerifier)
    assert isinstance(load_embedded_verifier(tiny_policy_file), CheckerLMVerifier)
    with pytest.raises(ConfigError, match="not both"):
        load_verifier(f"embedded+prm:{tiny_policy_file}")
    with pytest.raises(ConfigError, match="unknown embedded variant"):
        load_verifier("embedded+orm")


# --- the shipped checker ---------------------------------------------------------------------------


def test_shipped_checker_is_the_default_verifier_and_small():
    assert checker_path().is_file() and checker_path().stat().st_size < 5e6
    assert isinstance(load_verifier("embedded"), CheckerLMVerifier)


def test_shipped_checker_finds_the_first_slip_of_a_solution():
    checker = load_embedded_verifier()
    problems = make_split("test", levels=[3, 4], n_per_level=10, seed=5)
    hits = 0
    for p in problems:
        slip_at = p.solution.index("\n") + 1 + p.width + 3  # a result digit of step 2
        wrong = _with_slip(p.solution, slip_at)
        assert first_slip(p, wrong) == slip_at
        right_score, wrong_score = checker.score([p.prompt] * 2, [p.solution, wrong])
        # Step 1 is the same text in both; step 2 is where the slip is.
        assert right_score.step_scores[0] == pytest.approx(wrong_score.step_scores[0])
        hits += wrong_score.step_scores[1] < 0.5 * right_score.step_scores[1]
    assert hits >= 18


def test_best_of_n_by_the_shipped_checker_beats_greedy_on_hard_levels():
    """The point of the checker: among the policy's own samples it finds right answers that greedy
    decoding misses (the card and RESULTS.md measure it on many more problems)."""
    policy, checker = EmbeddedGenerator.load(), load_embedded_verifier()
    problems = make_split("test", levels=[3, 4], n_per_level=15, seed=21)
    greedy = policy.generate([p.prompt for p in problems], SamplingParams(n=1, temperature=0.0))
    groups = policy.generate([p.prompt for p in problems], SamplingParams(n=16, temperature=1.0, seed=1))
    greedy_right = picked_right = 0
    for p, g, group in zip(problems, greedy, groups):
        texts = [c.text for c in group]
        scores = checker.score([p.prompt] * len(texts), texts)
        best = max(range(len(texts)), key=lambda i: scores[i].aggregate("min"))
        greedy_right += is_correct(p, g[0].text)
        picked_right += is_correct(p, texts[best])
    assert picked_right >= greedy_right + 4


def test_any_order_targets_accept_every_order_and_correct_a_miscopied_operand():
    import random

    from ponder.tasks.answers import check_steps, first_slip
    from ponder.tasks.arithmetic import solution_in_order

    tok = CharTokenizer()
    problem = make_split("train", levels=[4], n_per_level=1)[0]
    reordered = solution_in_order(problem, [4, 2, 0, 3, 1])
    # In the question's order the reordered solution slips at its first operation; in any order it
    # is right everywhere, and its targets are the characters written.
    assert first_slip(problem, reordered) is not None
    assert first_slip(problem, reordered, any_order=True) is None
    assert all(check_steps(problem, reordered, any_order=True))
    ids, targets = corrected_example(_record(problem, reordered), tok, any_order=True)
    start = len(tok.encode(problem.prompt, bos=True))
    assert targets[start - 1 : -1] == tok.encode(reordered) and targets[-1] == tok.eos_id
    # A right operand miscopied in step 2 (after its first digit, which picks the operation) is
    # corrected to that operation's digit, and the step is wrong.
    w = problem.width
    at = reordered.index("\n") + 1 + w + 2
    slipped = _with_slip(reordered, at)
    assert first_slip(problem, slipped, any_order=True) == at
    assert expected_chars(problem, slipped, any_order=True)[at] == reordered[at]
    assert check_steps(problem, slipped, any_order=True)[1] is False
    # Random orders are all right.
    rng = random.Random(0)
    for _ in range(20):
        order = list(range(len(problem.steps)))
        rng.shuffle(order)
        assert first_slip(problem, solution_in_order(problem, order), any_order=True) is None


def test_an_any_order_checker_scores_tokens_relative_to_the_likeliest(tmp_path, tiny_policy_file):
    model, _ = load_model(tiny_policy_file)
    plain, relative = CheckerLMVerifier(model), CheckerLMVerifier(model, relative_to_best=True)
    problem = make_split("test", levels=[2], n_per_level=1)[0]
    a = plain.score([problem.prompt], [problem.solution])[0]
    b = relative.score([problem.prompt], [problem.solution])[0]
    assert all(y >= x for x, y in zip(a.step_scores, b.step_scores)) and b.outcome > a.outcome
    # Text made of the likeliest token at every position loses nothing.
    greedy = EmbeddedGenerator(model).generate(
        [problem.prompt], SamplingParams(n=1, temperature=0.0, max_new_tokens=30)
    )[0][0]
    assert relative.score([problem.prompt], [greedy.text])[0].outcome == pytest.approx(1.0, abs=1e-5)
    # Weights trained with any_order say so in their metadata, and load scoring that way.
    path = tmp_path / "checker.safetensors"
    save_model(model, path, metadata={"train_config": {"any_order": True}})
    assert load_verifier(f"embedded:{path}").relative_to_best is True
    assert load_verifier(f"embedded:{tiny_policy_file}").relative_to_best is False
