"""The reviser: revision examples from the policy's own samples, its training loop, and the shipped
reviser really revising."""

from __future__ import annotations

import json
import random

import pytest
import torch

from ponder.backends.spec import load_generator
from ponder.errors import ConfigError
from ponder.tasks import is_correct, make_split
from ponder.tasks.arithmetic import RETRY_LINE
from ponder.training.model import ModelConfig, TinyTransformer, load_model, save_model
from ponder.training.train_reviser import (
    ReviserTrainConfig,
    closest_last,
    draw_example,
    group_samples,
    is_complete,
    train_reviser,
)
from ponder.training.weights import reviser_path, verifier_path


def _quiet(*_: object) -> None:
    pass


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


def _answer_slip(solution: str, k: int = 0) -> str:
    return _with_slip(solution, len(solution) - 1 - k)  # a digit of the answer line


@pytest.fixture
def tiny_policy_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "policy.safetensors"
    save_model(TinyTransformer(ModelConfig(d_model=32, n_layer=2, n_head=2, max_seq_len=256)), path)
    return path


def _samples_file(tmp_path, problems) -> str:
    path = tmp_path / "samples.jsonl"
    with path.open("w") as f:
        for p in problems:
            wrong = [_answer_slip(p.solution, 1), _answer_slip(p.solution)]
            rows = [_record(p, p.solution), *(_record(p, w) for w in wrong), _record(p, wrong[0])]
            f.write(json.dumps({"question": p.question, "samples": rows}) + "\n")
    return str(path)


def test_samples_are_grouped_by_question_deduplicated_and_split_by_outcome():
    problems = make_split("train", levels=[2, 3], n_per_level=2)
    records = []
    for p in problems:
        wrong = _answer_slip(p.solution)
        records += [_record(p, wrong), _record(p, p.solution), _record(p, wrong)]
    groups = group_samples(records)
    assert [g.prompt for g in groups] == [p.prompt for p in problems]
    for g, p in zip(groups, problems):
        assert g.reference == p.solution
        assert g.right == [p.solution]
        assert g.wrong == [_answer_slip(p.solution)]  # the repeat is dropped
    with pytest.raises(ConfigError, match="sample 1 has no outcome"):
        group_samples([records[0], {k: v for k, v in records[1].items() if k != "outcome"}], "s.jsonl")


def test_the_wrong_attempt_closest_to_the_right_solution_comes_last():
    p = make_split("train", levels=[3], n_per_level=1)[0]
    near = _answer_slip(p.solution)
    far = "".join(str((int(c) + 3) % 10) if c.isdigit() else c for c in p.solution)
    assert closest_last([near, far], p.solution) == [far, near]
    assert closest_last([far, near], p.solution) == [far, near]
    assert is_complete(p.solution) and not is_complete(p.solution.rsplit("\n", 1)[0])


def test_examples_revise_wrong_attempts_keep_right_ones_and_distil_plain_prompts(tmp_path):
    problems = make_split("train", levels=[2, 3], n_per_level=3)
    groups = group_samples([r for p in problems for r in _rows(p)])
    by_prompt = {g.prompt: g for g in groups}
    rng = random.Random(0)
    only = {  # revise_weight must stay > 0: a vanishing one draws (almost surely) no revise example
        "keep": ReviserTrainConfig(revise_weight=1e-12, keep_weight=1, plain_weight=0),
        "plain": ReviserTrainConfig(revise_weight=1e-12, keep_weight=0, plain_weight=1),
    }
    for _ in range(30):
        prompt, target = draw_example(groups, rng, ReviserTrainConfig(keep_weight=0, plain_weight=0), 512)
        g = by_prompt[prompt.split("\n", 1)[0] + "\n"]
        assert target == g.reference and prompt.endswith(RETRY_LINE + "\n" + g.prompt)
        shown = prompt[len(g.prompt) : -len(g.prompt)].split(RETRY_LINE + "\n")[:-1]
        assert 1 <= len(shown) <= 3 and all(a.strip("\n") in g.wrong for a in shown)
    for _ in range(30):
        prompt, target = draw_example(groups, rng, only["keep"], 512)
        g = by_prompt[prompt.split("\n", 1)[0] + "\n"]
        assert target in g.right and prompt.endswith(target + "\n" + RETRY_LINE + "\n" + g.prompt)
    for _ in range(30):
        prompt, target = draw_example(groups, rng, only["plain"], 512)
        assert prompt in by_prompt and target in by_prompt[prompt].wrong + by_prompt[prompt].right
    # A tight length cap drops the oldest attempts; the prompt and target still fit.
    for _ in range(10):
        prompt, target = draw_example(groups, rng, ReviserTrainConfig(plain_weight=0), 140)
        assert len(prompt) + len(target) + 2 <= 140
    with pytest.raises(ConfigError, match="no training example fits"):
        draw_example(groups, rng, ReviserTrainConfig(plain_weight=0), 40)


def _rows(p) -> list[dict]:
    wrong = [_answer_slip(p.solution, k) for k in range(2)] + [_answer_slip(_answer_slip(p.solution), 1)]
    return [_record(p, p.solution), *(_record(p, w) for w in wrong)]


def test_reviser_trains_resumes_and_refuses_another_configuration(tmp_path, tiny_policy_file):
    samples = _samples_file(tmp_path, make_split("train", levels=[1, 2], n_per_level=4))
    cfg = ReviserTrainConfig(
        samples=samples,
        init_from=str(tiny_policy_file),
        out_dir=str(tmp_path / "r"),
        steps=4,
        batch_size=4,
        ckpt_every=2,
    )
    first = train_reviser(cfg, log=_quiet)
    weights = load_model(first)[0].state_dict()
    assert not torch.equal(
        weights["tok_emb.weight"], load_model(tiny_policy_file)[0].state_dict()["tok_emb.weight"]
    )
    lines: list[str] = []
    again = load_model(train_reviser(cfg, log=lines.append))[0].state_dict()
    assert any("resuming from step 4" in line for line in lines)
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    with pytest.raises(ConfigError, match="another reviser configuration"):
        train_reviser(ReviserTrainConfig(**{**cfg.__dict__, "lr": 3e-4}), log=_quiet)


def test_reviser_bad_input_is_a_clear_error(tmp_path, tiny_policy_file):
    with pytest.raises(ConfigError, match="--label checked"):
        train_reviser(
            ReviserTrainConfig(samples=str(tmp_path / "none.jsonl"), init_from=str(tiny_policy_file)),
            log=_quiet,
        )
    with pytest.raises(ConfigError, match="no policy weights"):
        train_reviser(ReviserTrainConfig(init_from=str(tmp_path / "missing.safetensors")), log=_quiet)
    all_right = tmp_path / "right.jsonl"
    p = make_split("train", levels=[1], n_per_level=1)[0]
    all_right.write_text(json.dumps({"question": p.question, "samples": [_record(p, p.solution)]}) + "\n")
    with pytest.raises(ConfigError, match="no wrong samples"):
        train_reviser(ReviserTrainConfig(samples=str(all_right), init_from=str(tiny_policy_file)), log=_quiet)
    samples = _samples_file(tmp_path, [p])
    with pytest.raises(ConfigError, match="not a policy"):
        train_reviser(
            ReviserTrainConfig(samples=samples, init_from=str(verifier_path()), out_dir=str(tmp_path / "v")),
            log=_quiet,
        )
    with pytest.raises(ConfigError, match="max_attempts must be >= 1"):
        ReviserTrainConfig(max_attempts=0)
    with pytest.raises(ConfigError, match="revise_weight > 0"):
        ReviserTrainConfig(revise_weight=0)


def test_reviser_spec_without_installed_weights_is_a_clear_error(tmp_path, monkeypatch):
    import ponder.training.weights as weights

    monkeypatch.setattr(weights, "reviser_path", lambda: tmp_path / "reviser.safetensors")
    with pytest.raises(ConfigError, match=r"embedded\+reviser: no weights .* `ponder train reviser`"):
        load_generator("embedded+reviser")


def test_the_shipped_reviser_fixes_wrong_first_attempts_the_policy_cannot():
    from ponder.backends.base import SamplingParams
    from ponder.tasks.arithmetic import revision_prompt

    assert reviser_path().is_file()
    problems = make_split("test", levels=[2, 3, 4], n_per_level=30, seed=5)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=160)
    policy, reviser = load_generator("embedded"), load_generator("embedded+reviser")
    firsts = [g[0].text for g in policy.generate([p.prompt for p in problems], greedy)]
    wrong = [(p, t) for p, t in zip(problems, firsts) if not is_correct(p, t)]
    assert len(wrong) >= 10
    prompts = [revision_prompt(p.prompt, [t]) for p, t in wrong]

    def fixed(generator) -> int:
        return sum(is_correct(p, g[0].text) for (p, _), g in zip(wrong, generator.generate(prompts, greedy)))

    # Shown its wrong attempt, the policy writes nothing useful; the reviser fixes many.
    assert fixed(policy) <= len(wrong) // 10
    assert fixed(reviser) >= len(wrong) // 3
