"""Test-time fine-tuning: SIFT selection (against a brute-force reference), nearest neighbours,
exact weight restoration, the trainer end to end on tiny models, and bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import lively, tiny_model
from ponder.backends.embedded import EmbeddedGenerator
from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from ponder.training.sift import (
    nearest_neighbours,
    normalize_rows,
    posterior_variance,
    random_selection,
    sift_select,
)
from ponder.training.ttt import (
    EmbeddedTunable,
    Example,
    PolicyEmbedder,
    TestTimeTrainer,
    TTTConfig,
    load_corpus,
    task_corpus,
    tunable_for,
)
from stubs import StepStub, one_marked_per_call

# --- SIFT selection ---------------------------------------------------------------------------------


def brute_force_sift(query: np.ndarray, corpus: np.ndarray, k: int, lam: float) -> list[int]:
    """Greedy selection recomputing the closed-form posterior variance for every candidate."""
    picked: list[int] = []
    for _ in range(k):
        scores = [posterior_variance(query, corpus[picked + [j]], lam) for j in range(len(corpus))]
        picked.append(int(np.argmin(scores)))
    return picked


@pytest.mark.parametrize("seed", range(6))
def test_sift_matches_a_brute_force_computation_on_tiny_cases(seed):
    rng = np.random.default_rng(seed)
    corpus = normalize_rows(rng.normal(size=(7, 4)))
    query = normalize_rows(rng.normal(size=4))
    lam = [0.01, 0.1, 1.0][seed % 3]
    sel = sift_select(query, corpus, k=6, lam=lam)
    assert sel.indices == brute_force_sift(query, corpus, 6, lam)
    for m in range(len(sel.indices) + 1):
        assert sel.variances[m] == pytest.approx(
            posterior_variance(query, corpus[sel.indices[:m]], lam), abs=1e-10
        )


def test_posterior_variance_never_increases_and_starts_at_the_prior():
    rng = np.random.default_rng(1)
    corpus = normalize_rows(rng.normal(size=(50, 8)))
    query = normalize_rows(rng.normal(size=8))
    for select in (sift_select, nearest_neighbours):
        sel = select(query, corpus, 20, lam=0.1)
        assert sel.variances[0] == pytest.approx(1.0)
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(sel.variances))
        assert all(v >= 0 for v in sel.variances)
    # SIFT is greedy on exactly this quantity, so it ends no higher than nearest neighbours.
    assert (
        sift_select(query, corpus, 20).final_variance <= nearest_neighbours(query, corpus, 20).final_variance
    )


def test_sift_skips_duplicates_that_nearest_neighbours_picks():
    # Three copies of one close example, and a novel one that explains another part of the prompt.
    query = normalize_rows(np.array([1.0, 1.0, 0.0]))
    close = normalize_rows(np.array([1.0, 0.2, 0.0]))
    novel = normalize_rows(np.array([0.0, 1.0, 0.3]))
    far = normalize_rows(np.array([0.0, 0.0, 1.0]))
    corpus = np.stack([close, close, close, novel, far])
    nn = nearest_neighbours(query, corpus, 3)
    assert nn.indices == [0, 1, 2]  # the copies, most similar first
    sift = sift_select(query, corpus, 3, lam=0.1)
    assert sift.indices[:2] == [0, 3]  # one copy, then the novel example
    assert sift.variances[2] < nn.variances[2]  # and it leaves less uncertainty


def test_random_selection_is_the_seeded_uniform_control():
    rng = np.random.default_rng(0)
    corpus = normalize_rows(rng.normal(size=(50, 8)))
    query = normalize_rows(rng.normal(size=8))
    sel = random_selection(query, corpus, 10, seed=1)
    assert len(set(sel.indices)) == 10 and all(0 <= i < 50 for i in sel.indices)
    assert sel.indices == random_selection(query, corpus, 10, seed=1).indices
    assert sel.indices != random_selection(query, corpus, 10, seed=2).indices
    assert sel.indices != nearest_neighbours(query, corpus, 10).indices
    # It reads on SIFT's scale, and SIFT (greedy on that scale) ends lower.
    assert sel.variances[0] == pytest.approx(1.0)
    assert sift_select(query, corpus, 10).final_variance <= sel.final_variance
    with pytest.raises(ConfigError, match="larger than the corpus"):
        random_selection(query, corpus, 51)


def test_sift_may_repeat_an_example_when_nothing_else_is_informative():
    query = normalize_rows(np.array([1.0, 0.0]))
    corpus = np.stack([query, normalize_rows(np.array([0.0, 1.0]))])
    sel = sift_select(query, corpus, 2, lam=1.0)
    assert sel.indices == [0, 0]
    assert sel.variances == pytest.approx([1.0, 0.5, 1.0 / 3.0])  # lam / (m + lam)
    assert sift_select(query, corpus, 2, lam=1.0, allow_repeats=False).indices == [0, 1]


def test_adaptive_threshold_stops_once_the_variance_is_low_enough():
    rng = np.random.default_rng(3)
    corpus = normalize_rows(rng.normal(size=(40, 6)))
    query = corpus[5] + 0.05 * rng.normal(size=6)  # a prompt the corpus covers well
    full = sift_select(query, normalize_rows(corpus), 10, lam=0.1)
    threshold = full.variances[3]
    sel = sift_select(normalize_rows(query), normalize_rows(corpus), 10, lam=0.1, threshold=threshold)
    assert sel.stopped_early and len(sel.indices) == 3 and sel.indices == full.indices[:3]
    assert all(v > threshold for v in sel.variances[:-1]) and sel.final_variance <= threshold
    # Already below the threshold: no example at all.
    none = sift_select(normalize_rows(query), normalize_rows(corpus), 10, threshold=1.0)
    assert none.indices == [] and none.stopped_early


@pytest.mark.parametrize(
    ("corpus", "k", "message"),
    [
        (np.zeros((0, 3)), 1, "the corpus is empty"),
        (np.eye(3), 4, "k=4 is larger than the corpus"),
        (np.eye(3), 0, "k .* must be a whole number >= 1"),
        (np.eye(4), 1, "the prompt embedding has shape"),
    ],
)
def test_selection_refuses_bad_input(corpus, k, message):
    for select in (sift_select, nearest_neighbours):
        with pytest.raises(ConfigError, match=message):
            select(np.ones(3), corpus, k)
    with pytest.raises(ConfigError, match="lam"):
        sift_select(np.ones(3), np.eye(3), 1, lam=0.0)


# --- weights come back exactly ------------------------------------------------------------------------


def fresh_generator(seed: int = 0) -> EmbeddedGenerator:
    return EmbeddedGenerator(lively(tiny_model("lm", seed=seed), seed=seed + 1))


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # bit for bit


EXAMPLES = task_corpus(n_per_level=1, levels=(1, 2))


@pytest.mark.parametrize(("mode", "optimizer"), [("full", "sgd"), ("lora", "sgd"), ("full", "adam")])
def test_adaptation_changes_the_model_and_restores_it_bit_for_bit(mode, optimizer):
    gen = fresh_generator()
    model = gen.model
    before = state_copy(model)
    x = torch.tensor([gen.tokenizer.encode(EXAMPLES[0].prompt, bos=True)])
    with torch.no_grad():
        logits0 = model(x)
    n_params = model.num_params()
    tunable = tunable_for(gen)
    assert isinstance(tunable, EmbeddedTunable)
    config = TTTConfig(mode=mode, optimizer=optimizer, lr=1e-2, steps_per_example=3)
    with tunable.adapted(EXAMPLES, config) as stats:
        with torch.no_grad():
            assert not torch.equal(model(x), logits0)
        assert stats.steps == 3 * len(EXAMPLES) and stats.tokens > 0
        factor = 6 if mode == "full" else 4
        assert stats.flops == factor * n_params * stats.tokens
        # Repeated passes over the same examples lower the loss.
        assert np.mean(stats.losses[-len(EXAMPLES) :]) < np.mean(stats.losses[: len(EXAMPLES)])
    assert_same_state(model, before)
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    with torch.no_grad():
        assert torch.equal(model(x), logits0)


def test_weights_are_restored_when_the_answering_step_fails():
    gen = fresh_generator()
    before = state_copy(gen.model)
    with pytest.raises(RuntimeError, match="boom"):
        with tunable_for(gen).adapted(EXAMPLES, TTTConfig(lr=1e-2)):
            raise RuntimeError("boom")
    assert_same_state(gen.model, before)


# --- the trainer end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[Example]:
    return task_corpus(n_per_level=6, levels=(1, 2))


def test_trainer_selects_trains_answers_and_restores(corpus):
    gen = fresh_generator(seed=3)
    before = state_copy(gen.model)
    trainer = TestTimeTrainer(gen, corpus, TTTConfig(k=4, lr=1e-3))
    assert trainer.embeddings.shape == (len(corpus), gen.model.config.d_model)
    assert np.allclose(np.linalg.norm(trainer.embeddings, axis=1), 1.0)
    assert trainer.corpus_embed_flops == 2 * gen.model.num_params() * sum(len(e.prompt) + 1 for e in corpus)
    prompt = task_corpus("test", n_per_level=1, levels=(1,))[0].prompt
    result = trainer.solve(prompt, make_strategy("greedy"), Budget(samples=1), seed=0)
    assert len(result.selection.indices) == 4 and result.examples == [
        corpus[i] for i in result.selection.indices
    ]
    c = result.compute
    assert c.train_steps == 4 and c.train_tokens > 0 and c.train_flops > 0
    assert c.embed_tokens == len(prompt) + 1
    assert result.total_flops == result.result.compute.total_flops + c.total_flops
    assert result.result.compute.samples == 1
    assert_same_state(gen.model, before)
    # The corpus embeddings stay valid: the same prompt selects the same examples again.
    assert trainer.select(prompt).indices == result.selection.indices


def test_sift_nn_and_none_differ_only_in_what_they_pick(corpus):
    gen = fresh_generator(seed=4)
    prompt = task_corpus("test", n_per_level=1, levels=(2,))[0].prompt
    picks = {}
    for select in ("sift", "nn", "random", "none"):
        trainer = TestTimeTrainer(gen, corpus, TTTConfig(select=select, k=3))
        result = trainer.solve(prompt, make_strategy("greedy"), Budget(samples=1))
        picks[select] = result.selection.indices
        assert result.compute.train_steps == len(result.selection.indices)
    assert picks["none"] == [] and len(picks["nn"]) == len(set(picks["nn"])) == 3
    assert picks["sift"][0] == picks["nn"][0]  # both start from the most similar example
    assert len(set(picks["random"])) == 3 and picks["random"] != picks["nn"]


def test_adaptive_stopping_trains_less_on_a_covered_prompt(corpus):
    gen = fresh_generator(seed=5)
    full = TestTimeTrainer(gen, corpus, TTTConfig(k=6))
    covered = corpus[0].prompt  # the prompt is in the corpus: one pick explains most of it
    threshold = full.select(covered).variances[2]
    trainer = TestTimeTrainer(gen, corpus, TTTConfig(k=6, threshold=threshold))
    result = trainer.solve(covered, make_strategy("greedy"), Budget(samples=1))
    assert result.selection.stopped_early and result.compute.train_steps <= 2
    # Nearest neighbours under the same rule: its first pick is the same, its later ones redundant.
    first = full.select(covered).variances[1] + 1e-9  # the two compute it by different formulas
    nn = TestTimeTrainer(gen, corpus, TTTConfig(select="nn", k=6, threshold=first)).select(covered)
    assert nn.stopped_early and len(nn.indices) == 1


def test_a_custom_embedder_is_used(corpus):
    gen = fresh_generator(seed=6)

    class LengthEmbedder:
        name = "length"
        flops_per_token = 0.0

        def embed(self, texts):
            return np.array([[len(t), t.count("+"), t.count("-"), 1.0] for t in texts], dtype=float)

        def count_tokens(self, texts):
            return sum(map(len, texts))

    trainer = TestTimeTrainer(gen, corpus, TTTConfig(k=2, center=False), embedder=LengthEmbedder())
    assert trainer.embeddings.shape == (len(corpus), 4) and trainer.corpus_embed_flops == 0
    assert len(trainer.select(corpus[3].prompt).indices) == 2


def test_policy_embedder_ignores_padding():
    model = lively(tiny_model("lm", seed=2))
    emb = PolicyEmbedder(model, batch_size=8)
    texts = ["Q:12+3\n", "Q:1234+56-7\n"]
    together = emb.embed(texts)
    alone = np.concatenate([emb.embed([t]) for t in texts])
    assert together.shape == (2, model.config.d_model)
    assert np.allclose(together, alone, atol=1e-5)


# --- bad input -------------------------------------------------------------------------------------------


def test_a_backend_that_cannot_be_fine_tuned_is_refused(corpus):
    remote = StepStub(one_marked_per_call(2))
    remote.name = "openai://localhost:8000/m"
    with pytest.raises(ConfigError, match="'openai://localhost:8000/m' cannot be fine-tuned"):
        TestTimeTrainer(remote, corpus)


def test_empty_corpus_and_oversized_k_are_refused(corpus):
    gen = fresh_generator()
    with pytest.raises(ConfigError, match="the corpus is empty"):
        TestTimeTrainer(gen, [])
    with pytest.raises(ConfigError, match=f"k=99 is larger than the corpus \\({len(corpus)} examples\\)"):
        TestTimeTrainer(gen, corpus, TTTConfig(k=99))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(select="bayes"), "select must be one of"),
        (dict(mode="half"), "mode must be one of"),
        (dict(k=0), "k must be a whole number >= 1"),
        (dict(threshold=2.0), "threshold must be in"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(optimizer="lbfgs"), "optimizer must be 'sgd' or 'adam'"),
    ],
)
def test_bad_settings_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        TTTConfig(**config)


def test_load_corpus_reads_jsonl_and_names_bad_lines(tmp_path):
    good = tmp_path / "c.jsonl"
    good.write_text(
        json.dumps({"prompt": "Q:21\n", "target": "A:21"})
        + "\n\n"
        + json.dumps({"question": "48+27-13"})
        + "\n"
    )
    examples = load_corpus(good)
    assert examples[0] == Example("Q:21\n", "A:21")
    assert examples[1].prompt == "Q:84+72-31\n" and examples[1].target.endswith("A:26")
    with pytest.raises(ConfigError, match="does not exist"):
        load_corpus(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="holds no examples"):
        load_corpus(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "target": "y"}\n{oops\n')
    with pytest.raises(ConfigError, match="line 2: not valid JSON"):
        load_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "fields.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match="line 1: needs string fields 'prompt' and 'target'"):
        load_corpus(tmp_path / "fields.jsonl")


def test_a_prefix_cache_never_serves_states_of_other_weights():
    from ponder.backends.base import SamplingParams

    model = lively(tiny_model("lm", seed=7), seed=8)
    cached = EmbeddedGenerator(model, prefix_cache_mb=4)
    prompt = EXAMPLES[0].prompt
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=40)
    before = cached.generate([prompt], params)[0][0].text
    with tunable_for(cached).adapted(EXAMPLES, TTTConfig(lr=0.5, steps_per_example=4)):
        inside = cached.generate([prompt], params)[0][0].text
        fresh = EmbeddedGenerator(model).generate([prompt], params)[0][0].text
        assert inside == fresh  # the adapted weights, not the states cached before
    assert cached.generate([prompt], params)[0][0].text == before
