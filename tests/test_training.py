"""Training recipes: resumable policy training, rollout labels, verifier training, card metrics."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from ponder.backends.base import Completion, SamplingParams
from ponder.errors import ConfigError
from ponder.tasks import check_steps, make_split
from ponder.tasks.answers import is_correct
from ponder.training.card import auroc
from ponder.training.model import ModelConfig, TinyTransformer, load_model, rope_tables, save_model
from ponder.training.prm_data import RolloutConfig, generate_labels, label_problems, read_labels
from ponder.training.tokenizer import CharTokenizer
from ponder.training.train_policy import (
    PolicyTrainConfig,
    accumulate_lm_loss,
    draw_train_problems,
    encode_batch,
    lm_loss,
    train_policy,
    training_example,
)
from ponder.training.train_verifier import (
    VerifierTrainConfig,
    encode_records,
    init_from_policy,
    train_verifier,
    verifier_loss,
)
from ponder.verifiers.embedded import EmbeddedVerifier

TINY = dict(d_model=32, n_layer=2, n_head=2, batch_size=8, eval_every=10_000, eval_per_level=1, ckpt_every=3)


def _quiet(*_: object) -> None:
    pass


def _weights(path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path)
    return model.state_dict()


def test_policy_training_resumes_to_the_same_weights(tmp_path):
    straight = train_policy(PolicyTrainConfig(out_dir=str(tmp_path / "a"), steps=6, **TINY), log=_quiet)
    cfg = PolicyTrainConfig(out_dir=str(tmp_path / "b"), steps=6, **TINY)
    assert train_policy(cfg, log=_quiet, max_steps_this_run=4) is None  # interrupted after step 4
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed = train_policy(cfg, log=_quiet)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-3), k
    meta = load_model(resumed)[1]
    assert meta["train_config"]["steps"] == 6 and meta["train_seconds"] > 0


def test_policy_training_refuses_a_checkpoint_from_another_config(tmp_path):
    train_policy(PolicyTrainConfig(out_dir=str(tmp_path), steps=3, **TINY), log=_quiet)
    other = PolicyTrainConfig(out_dir=str(tmp_path), steps=3, **(TINY | {"d_model": 64}))
    with pytest.raises(ConfigError, match="different training config"):
        train_policy(other, log=_quiet)


class ScriptedPolicy:
    """Samples: half right, half with a wrong second step. Rollouts: finish right from a right
    prefix, wrong from a wrong one. So MC labels are known exactly."""

    num_params = 1

    def __init__(self, problem):
        self.problem = problem
        ref = problem.solution.split("\n")
        wrong_second = ref[1].split("=")[0] + "=" + "9" * problem.width
        self.good = problem.solution
        self.bad = "\n".join([ref[0], wrong_second, *ref[2:-1], "A:" + "9" * problem.width])

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            prefix = prompt[len(self.problem.prompt) :]
            if not prefix:
                texts = [self.good if i % 2 == 0 else self.bad for i in range(params.n)]
            elif all(check_steps(self.problem, prefix)):
                texts = [self.good[len(prefix) :]] * params.n
            else:
                texts = ["A:" + "9" * self.problem.width] * params.n
            out.append([Completion(t, [0] * len(t), [0.0] * len(t), "eos", 1) for t in texts])
        return out


@pytest.mark.parametrize("label", ["hard", "soft"])
def test_rollout_labels_come_from_the_rollouts_that_reach_the_answer(label):
    problem = next(p for p in make_split("train", levels=[2], n_per_level=20) if p.answer != int("9" * 2))
    cfg = RolloutConfig(samples_per_problem=2, rollouts_per_step=3, label=label)
    records = label_problems(ScriptedPolicy(problem), [problem], cfg, seed=0)
    good, bad = records
    assert good["outcome"] == 1.0 and good["step_labels"] == [1.0] * len(good["steps"])
    assert bad["outcome"] == 0.0
    # First step right -> its rollouts all succeed; from the wrong second step on, none do.
    assert bad["step_labels"][0] == 1.0
    assert bad["step_labels"][1:] == [0.0] * (len(bad["steps"]) - 1)
    assert bad["step_values"] == bad["step_labels"]  # all-or-nothing rollouts: both estimates agree


def test_checked_labels_annotate_each_step_without_rollouts():
    problem = next(p for p in make_split("train", levels=[3], n_per_level=20) if p.answer != int("9" * 3))

    class NoRollouts(ScriptedPolicy):
        def generate(self, prompts, params):
            assert all(p == self.problem.prompt for p in prompts), "checked labels need no rollouts"
            return super().generate(prompts, params)

    cfg = RolloutConfig(samples_per_problem=2, label="checked")
    good, bad = label_problems(NoRollouts(problem), [problem], cfg, seed=0)
    assert good["step_labels"] == [1.0] * len(good["steps"])
    # Right first step; the wrong second one and everything after it are off track.
    assert bad["step_labels"] == [1.0] + [0.0] * (len(bad["steps"]) - 1)
    assert bad["outcome"] == 0.0


def test_hard_labels_mark_a_step_good_when_any_rollout_wins_soft_ones_give_the_fraction():
    problem = next(p for p in make_split("train", levels=[2], n_per_level=20) if p.answer != int("9" * 2))

    class OneInThree(ScriptedPolicy):
        """Rollouts: one of every three reaches the answer."""

        def generate(self, prompts, params):
            groups = super().generate(prompts, params)
            if params.n == 3:
                for group in groups:
                    group[1] = group[2] = Completion("A:1", [0, 0, 0], [0.0] * 3, "eos", 1)
            return groups

    for label, expected in (("hard", 1.0), ("soft", 1 / 3)):
        cfg = RolloutConfig(samples_per_problem=2, rollouts_per_step=3, label=label)
        good, _ = label_problems(OneInThree(problem), [problem], cfg, seed=0)
        assert good["step_labels"][0] == pytest.approx(expected)
        assert good["step_values"][0] == pytest.approx(1 / 3)


def test_unknown_rollout_label_is_named():
    with pytest.raises(ConfigError, match="rollout label"):
        RolloutConfig(label="fuzzy")


@pytest.fixture
def tiny_policy_file(tmp_path):
    torch.manual_seed(0)
    model = TinyTransformer(ModelConfig(d_model=32, n_layer=2, n_head=2, max_seq_len=256))
    path = tmp_path / "policy.safetensors"
    save_model(model, path)
    return path


def test_label_generation_resumes_without_duplicates(tmp_path, tiny_policy_file):
    from ponder.backends.embedded import EmbeddedGenerator

    gen = EmbeddedGenerator(load_model(tiny_policy_file)[0])
    out = tmp_path / "labels.jsonl"
    cfg = RolloutConfig(
        out_file=str(out), n_problems=3, samples_per_problem=2, rollouts_per_step=2, problems_per_batch=2
    )
    generate_labels(gen, cfg, log=_quiet)
    first = read_labels(out)
    assert len(first) == 3 * 2
    for r in first:
        assert len(r["step_labels"]) == len(r["steps"])
        assert all(0.0 <= x <= 1.0 for x in r["step_labels"])
    # A line cut short by a kill is ignored and its problem labelled again; finished ones are kept.
    lines = out.read_text().splitlines()
    assert len(lines) == 3  # one line per problem
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    generate_labels(gen, cfg, log=_quiet)
    again = read_labels(out)
    assert len(again) == len(first)
    assert sorted(r["question"] for r in again) == sorted(r["question"] for r in first)
    assert out.read_text().splitlines()[:2] == lines[:2]


def _write_reference_labels(path, problems, step_labelled, outcome) -> None:
    """A labels file of reference solutions: sample i has step labels when ``step_labelled(i)``."""
    with path.open("w") as f:
        for i, p in enumerate(problems):
            steps = p.solution.split("\n")
            sample = {
                "question": p.question,
                "prompt": p.prompt,
                "solution": p.solution,
                "steps": steps,
                "step_labels": [1.0] * len(steps) if step_labelled(i) else None,
                "outcome": outcome(i),
            }
            f.write(json.dumps({"question": p.question, "samples": [sample]}) + "\n")


def test_verifier_trains_from_labels_and_loads(tmp_path, tiny_policy_file):
    labels = tmp_path / "labels.jsonl"
    problems = make_split("train", levels=[1], n_per_level=8)
    _write_reference_labels(labels, problems, lambda i: True, lambda i: 1.0)
    cfg = VerifierTrainConfig(
        labels=str(labels),
        init_from=str(tiny_policy_file),
        out_dir=str(tmp_path / "v"),
        epochs=2,
        batch_size=4,
    )
    path = train_verifier(cfg, log=_quiet)
    verifier = EmbeddedVerifier.load(path)
    scores = verifier.score([problems[0].prompt], [problems[0].solution])
    assert len(scores[0].step_scores) == len(problems[0].solution.split("\n"))
    assert all(0.0 <= s <= 1.0 for s in scores[0].step_scores)


def test_verifier_trains_on_outcome_only_samples_beside_step_labelled_ones(tmp_path, tiny_policy_file):
    labels = tmp_path / "labels.jsonl"
    problems = make_split("train", levels=[1], n_per_level=6)
    _write_reference_labels(labels, problems, lambda i: i % 2 == 0, lambda i: float(i % 3 == 0))
    records = encode_records(read_labels(labels), CharTokenizer())
    assert len(records) == 6 and sum(1 for r in records if not r.ends) == 3
    loss = verifier_loss(init_from_policy(tiny_policy_file), records[1:2], CharTokenizer().pad_id)
    assert torch.isfinite(loss) and loss > 0  # an outcome-only batch trains the ORM head alone
    cfg = VerifierTrainConfig(
        labels=str(labels),
        init_from=str(tiny_policy_file),
        out_dir=str(tmp_path / "v"),
        epochs=1,
        batch_size=2,
    )
    assert EmbeddedVerifier.load(train_verifier(cfg, log=_quiet)).score([problems[0].prompt], ["01"])


def test_verifier_training_without_labels_is_a_clear_error(tmp_path, tiny_policy_file):
    empty = tmp_path / "labels.jsonl"
    empty.write_text("")
    cfg = VerifierTrainConfig(labels=str(empty), init_from=str(tiny_policy_file), out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="no rollout labels"):
        train_verifier(cfg, log=_quiet)


def test_auroc():
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    assert auroc([0.3, 0.7, 0.5], [False, True, True]) == 1.0
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_policy_training_stops_early_once_the_dev_target_is_reached(tmp_path):
    cfg = PolicyTrainConfig(
        out_dir=str(tmp_path),
        steps=10,
        **(TINY | {"eval_every": 2}),
        eval_from=0,
        stop_level=1,
        stop_accuracy=0.0,
    )
    meta = load_model(train_policy(cfg, log=_quiet))[1]
    assert meta["stopped_early"] is True and meta["final_step"] == 2
    assert [h["step"] for h in meta["history"]] == [2]


def test_a_stricter_stop_rule_lets_a_stopped_run_train_on(tmp_path):
    base = dict(out_dir=str(tmp_path), steps=6, **(TINY | {"eval_every": 2}), eval_from=0, stop_level=1)
    first = load_model(train_policy(PolicyTrainConfig(**base, stop_accuracy=0.0), log=_quiet))[1]
    assert first["final_step"] == 2
    second = load_model(train_policy(PolicyTrainConfig(**base, stop_accuracy=None), log=_quiet))[1]
    assert second["final_step"] == 6 and second["stopped_early"] is False


def test_verifier_over_the_policy_trunk_keeps_the_trunk_and_reads_its_surprise(tiny_policy_file):
    policy, _ = load_model(tiny_policy_file)
    verifier = init_from_policy(tiny_policy_file, extra_layers=2, surprise_features=True)
    assert verifier.config.n_layer == 4 and verifier.config.surprise_after == 2
    trunk_keys = ("blocks.0.", "blocks.1.", "tok_emb")
    trunk = {k: v for k, v in verifier.state_dict().items() if k.startswith(trunk_keys)}
    for k, v in trunk.items():
        assert torch.equal(v, policy.state_dict()[k]), k
    assert torch.equal(verifier.trunk_norm.weight, policy.ln_f.weight)
    # The surprise features are the policy's own next-token log-probs of the written tokens.
    tok = CharTokenizer()
    ids = torch.tensor([tok.encode("Q:12+34\n12+34=46\n", bos=True)])
    x = verifier.tok_emb(ids)
    rope = rope_tables(torch.arange(ids.shape[1]).unsqueeze(0), verifier.config.head_dim)
    for block in verifier.blocks[:2]:
        x = block(x, rope, None, None, 0)
    feats = (verifier.surprise_features(x, ids) * 10.0).detach()
    logp = torch.log_softmax(policy(ids)[0].float(), -1)
    expected = logp[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1).clamp(min=-30)
    assert torch.allclose(feats[0, 1:, 0], expected, atol=1e-4)
    assert feats[0, 0].abs().sum() == 0
    # Running minimum within each line: the last token of a line holds the line's worst slip.
    delim = tok.token_of("\n")
    ends = (ids[0] == delim).nonzero().flatten().tolist()
    start = 0
    for end in ends:
        assert feats[0, end, 3] == pytest.approx(float(feats[0, start : end + 1, 0].min()), abs=1e-4)
        assert feats[0, end, 4] == pytest.approx(float(feats[0, start : end + 1, 0].sum()), abs=1e-3)
        start = end + 1


def test_surprise_verifier_trains_with_a_frozen_trunk(tmp_path, tiny_policy_file):
    labels = tmp_path / "labels.jsonl"
    problems = make_split("train", levels=[1], n_per_level=8)
    _write_reference_labels(labels, problems, lambda i: True, lambda i: float(i % 2))
    cfg = VerifierTrainConfig(
        labels=str(labels),
        init_from=str(tiny_policy_file),
        out_dir=str(tmp_path / "v"),
        epochs=2,
        batch_size=4,
    )
    path = train_verifier(cfg, log=_quiet)
    trained, _ = load_model(path)
    policy, _ = load_model(tiny_policy_file)
    assert trained.config.surprise_after == policy.config.n_layer
    for k, v in policy.state_dict().items():
        if k.startswith("blocks."):  # fp16 on disk: equal to that precision
            assert torch.allclose(trained.state_dict()[k], v, atol=1e-3), k


def test_surprise_features_need_fresh_layers(tiny_policy_file):
    with pytest.raises(ConfigError, match="extra_layers"):
        init_from_policy(tiny_policy_file, extra_layers=0, surprise_features=True)
    with pytest.raises(ConfigError, match="surprise_after"):
        ModelConfig(n_layer=2, surprise_after=2, head="reward")


def test_policy_checkpoint_from_before_an_option_existed_still_resumes(tmp_path):
    cfg = PolicyTrainConfig(out_dir=str(tmp_path / "p"), steps=4, stop_accuracy=None, **TINY)
    assert train_policy(cfg, log=_quiet, max_steps_this_run=3) is None
    ckpt = tmp_path / "p" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    for key in ("revision_every", "max_attempts", "cap_level", "cap_accuracy"):
        state["config"].pop(key)
    torch.save(state, ckpt)
    assert train_policy(cfg, log=_quiet) is not None


def test_revision_batches_show_wrong_attempts_before_the_reference():
    from ponder.training.train_policy import training_example

    cfg = PolicyTrainConfig(revision_every=2, max_attempts=2)
    problem = make_split("train", levels=[3], n_per_level=1)[0]
    prompt, target = training_example(problem, random.Random(0), cfg, revision=True)
    assert target == problem.solution
    assert prompt.startswith(problem.prompt) and prompt.endswith("R:\n" + problem.prompt)
    assert 1 <= prompt.count("R:") <= 2
    assert training_example(problem, random.Random(0), cfg, revision=False) == (
        problem.prompt,
        problem.solution,
    )


def test_stop_rule_stops_on_the_easy_target_or_the_hard_cap():
    from ponder.training.train_policy import stop_reason

    cfg = PolicyTrainConfig(stop_level=1, stop_accuracy=0.9, cap_level=5, cap_accuracy=0.3)
    assert stop_reason({1: 0.5, 5: 0.1}, cfg) is None
    assert "L1" in stop_reason({1: 0.95, 5: 0.1}, cfg)
    assert "L5" in stop_reason({"1": 0.5, "5": 0.4}, cfg)


def _grads(model: TinyTransformer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_length_buckets_give_the_same_gradient_as_one_padded_batch():
    tok = CharTokenizer()
    rng = random.Random(3)
    cfg = PolicyTrainConfig(**TINY)
    pairs = [training_example(p, rng, cfg, False) for p in draw_train_problems(rng, 12, cfg.level_weights)]
    torch.manual_seed(0)
    model = TinyTransformer(cfg.model_config())
    x, y, _ = encode_batch(tok, [a for a, _ in pairs], [b for _, b in pairs])
    lm_loss(model, x, y).backward()
    one = _grads(model)
    model.zero_grad()
    loss = accumulate_lm_loss(model, tok, pairs, buckets=4)
    assert loss == pytest.approx(lm_loss(model, x, y).item(), rel=1e-5)
    four = _grads(model)
    assert one.keys() == four.keys()
    for name in one:
        assert torch.allclose(one[name], four[name], atol=1e-6), name


def test_bf16_training_learns_and_stop_step_keeps_the_longer_schedule(tmp_path):
    cfg = PolicyTrainConfig(out_dir=str(tmp_path), steps=10, stop_step=4, bf16=True, length_buckets=2, **TINY)
    meta = load_model(train_policy(cfg, log=_quiet))[1]
    assert meta["final_step"] == 4 and meta["stopped_early"] is False
    assert meta["train_config"]["steps"] == 10 and meta["train_config"]["bf16"] is True
    # The bucket count only changes how a batch is computed, so a run may resume with another.
    more = PolicyTrainConfig(
        out_dir=str(tmp_path), steps=10, stop_step=6, bf16=True, length_buckets=1, **TINY
    )
    assert load_model(train_policy(more, log=_quiet))[1]["final_step"] == 6
    # Mixed precision changes the numbers, so it may not.
    with pytest.raises(ConfigError, match="different training config"):
        train_policy(PolicyTrainConfig(out_dir=str(tmp_path), steps=10, stop_step=8, **TINY), log=_quiet)


def test_surprise_features_with_a_trainable_trunk_are_refused(tmp_path, tiny_policy_file):
    cfg = VerifierTrainConfig(
        labels=str(tmp_path / "labels.jsonl"), init_from=str(tiny_policy_file), trunk_lr_scale=0.5
    )
    with pytest.raises(ConfigError, match="frozen trunk"):
        train_verifier(cfg, log=_quiet)


@pytest.mark.parametrize("bad", [{"stop_step": 0}, {"length_buckets": 0}])
def test_a_bad_stop_step_or_bucket_count_is_named(tmp_path, bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        train_policy(PolicyTrainConfig(out_dir=str(tmp_path), steps=3, **TINY, **bad), log=_quiet)


def test_order_shuffle_trains_on_solutions_in_random_orders_and_off_leaves_the_stream_alone():
    problem = make_split("train", levels=[4], n_per_level=1)[0]
    plain = PolicyTrainConfig()
    rng = random.Random(5)
    assert training_example(problem, rng, plain, revision=False) == (problem.prompt, problem.solution)
    # Off, no random draw is made: the shipped recipe's data stream is what it was.
    assert rng.getstate() == random.Random(5).getstate()
    shuffled = PolicyTrainConfig(order_shuffle=1.0)
    targets = {training_example(problem, random.Random(s), shuffled, revision=False)[1] for s in range(30)}
    assert len(targets) > 5
    assert all(is_correct(problem, t) for t in targets)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"order_shuffle": 1.5}, "order_shuffle"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"device": "cuda"}, "no CUDA GPU"),
    ],
)
def test_a_bad_order_share_or_device_is_named(tmp_path, monkeypatch, bad, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    with pytest.raises(ConfigError, match=message):
        train_policy(PolicyTrainConfig(out_dir=str(tmp_path), steps=3, **TINY, **bad), log=_quiet)


def test_the_device_is_free_to_change_between_resumes(tmp_path):
    first = PolicyTrainConfig(out_dir=str(tmp_path), steps=6, stop_step=3, device="cpu", **TINY)
    train_policy(first, log=_quiet)
    ckpt = tmp_path / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    state["config"]["device"] = "cuda"  # as a run started on a GPU writes it
    torch.save(state, ckpt)
    meta = load_model(train_policy(PolicyTrainConfig(out_dir=str(tmp_path), steps=6, **TINY), log=_quiet))[1]
    assert meta["final_step"] == 6


def test_checked_labels_in_any_order_accept_a_reordered_right_solution():
    from ponder.tasks.arithmetic import solution_in_order

    problem = make_split("train", levels=[4], n_per_level=1)[0]
    reordered = solution_in_order(problem, list(reversed(range(len(problem.steps)))))

    class Reordering(ScriptedPolicy):
        def generate(self, prompts, params):
            return [[Completion(reordered, [0], [0.0], "eos", 1)] * params.n for _ in prompts]

    in_order = label_problems(
        Reordering(problem), [problem], RolloutConfig(samples_per_problem=1, label="checked"), 0
    )
    any_order = RolloutConfig(samples_per_problem=1, label="checked", any_order=True)
    labelled = label_problems(Reordering(problem), [problem], any_order, 0)
    assert labelled[0]["step_labels"] == [1.0] * len(labelled[0]["steps"])
    assert in_order[0]["step_labels"][0] == 0.0 and in_order[0]["outcome"] == 1.0
