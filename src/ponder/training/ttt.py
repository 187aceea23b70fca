"""Test-time fine-tuning: pick solved examples for a prompt, train on them briefly, answer, restore.

For each prompt, :class:`TestTimeTrainer`

1. embeds the prompt (by default with the policy's own mean-pooled hidden states; any
   :class:`Embedder`, e.g. a sentence embedding, will do) and selects up to ``k`` examples from a
   corpus of solved problems: by SIFT (posterior-variance minimisation, see
   :mod:`ponder.training.sift`), by nearest-neighbour retrieval (the baseline), or none;
2. fine-tunes the generator's model on them, one gradient step per example in the order picked
   (full fine-tuning or a low-rank adapter for the embedded policy; LoRA via peft for a
   transformers model), with plain SGD by default (see :func:`make_ttt_optimizer`);
3. runs any strategy with the adapted model, then restores the original weights exactly (bit for
   bit), whatever happened.

**Adaptive stopping.** With ``threshold`` set, selection stops as soon as the prompt's SIFT
posterior variance is at or below it, so a prompt the corpus already covers well gets few examples
(and few gradient steps). The variance starts at 1 (unit-norm embeddings) and falls towards
``lam / (m + lam)`` when ``m`` picks are near-copies of the prompt; a threshold of e.g. 0.5 asks
for "about half the uncertainty explained". It is a statement about coverage of the prompt by the
corpus in embedding space, not a calibrated probability of error.

**Compute.** What the fine-tuning spends is reported apart from the strategy's own compute (which
stays within the strategy's budget): the prompt's embedding pass (2 x params per token), and the
training tokens at 6 x params per token for full fine-tuning (forward + backward), 4 x params for
an adapter (no weight gradients for the frozen matrices). Embedding the corpus is a one-off cost
of the trainer (``corpus_embed_flops``), shared by every prompt.

A remote model (an HTTP API) has no weights ponder can update: asking to fine-tune one is a
ConfigError, as are an empty corpus and ``k`` larger than the corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ponder.backends.base import Generator
from ponder.errors import ConfigError
from ponder.strategies.base import Strategy, StrategyResult
from ponder.strategies.budget import Budget
from ponder.training.model import TinyTransformer
from ponder.training.sift import (
    Selection,
    nearest_neighbours,
    normalize_rows,
    random_selection,
    sift_select,
)
from ponder.training.tokenizer import CharTokenizer
from ponder.verifiers.base import Verifier

SELECTORS = ("sift", "nn", "random", "none")
MODES = ("full", "lora")


# --- corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A solved problem: the prompt the model sees and the text it should write after it."""

    prompt: str
    target: str


def task_corpus(
    split: str = "train", n_per_level: int = 200, levels: tuple[int, ...] | None = None, seed: int = 0
) -> list[Example]:
    """Solved problems of the built-in task (the train split by default) with reference solutions."""
    from ponder.tasks.arithmetic import make_split

    return [Example(p.prompt, p.solution) for p in make_split(split, levels, n_per_level, seed)]


def load_corpus(path: str | Path) -> list[Example]:
    """Solved problems from a JSONL file, one object per line: ``{"prompt": ..., "target": ...}``
    (``completion`` or ``solution`` also name the target), or ``{"question": "48+27-13"}`` for the
    built-in task (its reference solution is the target). Blank lines are skipped."""
    from ponder.tasks.arithmetic import parse_question

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"corpus file {path} does not exist")
    out: list[Example] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"corpus file {path}, line {n}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ConfigError(
                f"corpus file {path}, line {n}: expected a JSON object, got {type(row).__name__}"
            )
        target = next((row[k] for k in ("target", "completion", "solution") if k in row), None)
        if "prompt" in row and isinstance(row["prompt"], str) and isinstance(target, str):
            out.append(Example(row["prompt"], target))
        elif isinstance(row.get("question"), str):
            problem = parse_question(row["question"])
            out.append(Example(problem.prompt, problem.solution))
        else:
            raise ConfigError(
                f"corpus file {path}, line {n}: needs string fields 'prompt' and 'target' "
                "(or 'completion' / 'solution'), or a built-in 'question'"
            )
    if not out:
        raise ConfigError(f"corpus file {path} holds no examples")
    return out


# --- embeddings ------------------------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """Texts -> one vector each, ``(len(texts), dim)``. ``flops_per_token`` (0 if unknown) and
    ``count_tokens`` let the trainer report what embedding costs."""

    name: str
    flops_per_token: float

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, texts: list[str]) -> int: ...


class PolicyEmbedder:
    """The embedded policy's final hidden states (after the last layer norm), mean-pooled over the
    tokens of ``[bos] text``: the model's own view of the prompt, the SIFT default."""

    def __init__(self, model: TinyTransformer, tokenizer: CharTokenizer | None = None, batch_size: int = 128):
        self.model = model
        self.tokenizer = tokenizer or CharTokenizer()
        self.batch_size = batch_size
        self.name = "policy-hidden"
        self.flops_per_token = 2.0 * model.num_params()

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(self.tokenizer.encode(t, bos=True)) for t in texts)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        captured: list[torch.Tensor] = []
        # A hook reads the hidden states without a second forward path in the model.
        handle = self.model.ln_f.register_forward_hook(lambda _m, _i, out: captured.append(out))
        chunks = []
        try:
            for b in range(0, len(texts), self.batch_size):
                ids = [self.tokenizer.encode(t, bos=True) for t in texts[b : b + self.batch_size]]
                width = max(map(len, ids))
                x = torch.full((len(ids), width), self.tokenizer.pad_id, dtype=torch.long)
                valid = torch.zeros((len(ids), width), dtype=torch.float32)
                for i, row in enumerate(ids):  # right padding: causal attention never sees it
                    x[i, : len(row)] = torch.tensor(row)
                    valid[i, : len(row)] = 1.0
                captured.clear()
                self.model(x)
                hidden = captured[0].float()
                pooled = (hidden * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
                chunks.append(pooled.numpy().astype(np.float64))
        finally:
            handle.remove()
        return np.concatenate(chunks) if chunks else np.zeros((0, self.model.config.d_model))


# --- fine-tuning -----------------------------------------------------------------------------------


@dataclass
class TrainStats:
    """What one adaptation ran: optimizer steps, tokens trained on, FLOPs."""

    steps: int = 0
    tokens: int = 0
    flops: float = 0.0
    losses: list[float] = field(default_factory=list)


@runtime_checkable
class Tunable(Protocol):
    """A model that can be adapted to a few examples and then put back exactly as it was."""

    def adapted(self, examples: list[Example], config: TTTConfig) -> Iterator[TrainStats]:
        """Context manager: fine-tune on ``examples``, yield the stats, restore on exit."""
        ...

    def default_embedder(self) -> Embedder: ...


class LowRankDelta(nn.Module):
    """A parametrization ``W -> W + (alpha / r) B A`` with trainable ``A`` (r x in) and ``B`` (out x r),
    ``B`` starting at zero so the adapted model starts as the original one."""

    def __init__(
        self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator
    ):
        super().__init__()
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, in_features, generator=generator) / in_features**0.5)
        self.B = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)


class EmbeddedTunable:
    """Test-time fine-tuning of the embedded policy (a :class:`TinyTransformer`).

    ``full`` trains every weight and restores them from a copy; ``lora`` trains a low-rank delta
    on each block's linear layers (attention and MLP; the tied embedding / output matrix stays
    frozen) through a torch parametrization, and removing it returns the untouched originals.
    """

    def __init__(
        self,
        model: TinyTransformer,
        tokenizer: CharTokenizer | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer or CharTokenizer()
        self.generator = generator

    def default_embedder(self) -> Embedder:
        return PolicyEmbedder(self.model, self.tokenizer)

    def _forget_cached_states(self) -> None:
        # A generator's prefix cache holds keys and values computed with the weights of the time:
        # stale once the weights change, and again once they are restored.
        reset = getattr(self.generator, "reset_prefix_cache", None)
        if callable(reset):
            reset()

    def _targets(self) -> list[nn.Linear]:
        return [
            m
            for name, m in self.model.named_modules()
            if name.startswith("blocks.") and isinstance(m, nn.Linear)
        ]

    @contextmanager
    def adapted(self, examples: list[Example], config: TTTConfig) -> Iterator[TrainStats]:
        from torch.nn.utils import parametrize

        model = self.model
        was_training = model.training
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        base_params = model.num_params()  # before any adapter is added
        snapshot = None
        targets: list[nn.Linear] = []
        self._forget_cached_states()
        try:
            if config.mode == "full":
                snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
                params = list(model.parameters())
                flops_per_token = 6.0 * base_params
            else:
                for p in model.parameters():
                    p.requires_grad_(False)
                gen = torch.Generator().manual_seed(config.seed)
                targets = self._targets()
                params = []
                for lin in targets:
                    delta = LowRankDelta(lin.out_features, lin.in_features, config.rank, config.alpha, gen)
                    parametrize.register_parametrization(lin, "weight", delta)
                    params += [delta.A, delta.B]
                flops_per_token = 4.0 * base_params
            stats = self._train(params, examples, config, flops_per_token) if examples else TrainStats()
            model.eval()
            yield stats
        finally:
            if snapshot is not None:
                with torch.no_grad():
                    model.load_state_dict(snapshot)
            for lin in targets:
                if parametrize.is_parametrized(lin, "weight"):
                    parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
            for name, p in model.named_parameters():
                p.requires_grad_(flags[name])
            model.train(was_training)
            self._forget_cached_states()

    def _train(
        self, params: list[nn.Parameter], examples: list[Example], config: TTTConfig, flops_per_token: float
    ) -> TrainStats:
        from ponder.training.train_policy import encode_batch, lm_loss

        opt = make_ttt_optimizer(params, config)
        stats = TrainStats()
        self.model.train()
        for _ in range(config.steps_per_example):
            for ex in examples:
                x, y, _ = encode_batch(self.tokenizer, [ex.prompt], [ex.target])
                loss = lm_loss(self.model, x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                stats.steps += 1
                stats.tokens += x.numel()
                stats.losses.append(loss.item())
        stats.flops = flops_per_token * stats.tokens
        return stats


def make_ttt_optimizer(params: list[nn.Parameter], config: TTTConfig) -> torch.optim.Optimizer:
    """Plain SGD by default: its steps scale with the loss, so an example the model already gets
    right barely moves it. Adam's first steps move every weight by about ``lr`` whatever the
    gradient, which on a small, well-trained model turns near-zero gradients into noise."""
    if config.optimizer == "adam":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0, betas=(0.9, 0.98))
    return torch.optim.SGD(params, lr=config.lr)


def tunable_for(generator: Generator) -> Tunable:
    """The fine-tuning adapter for a generator's model, or a ConfigError saying why there is none."""
    from ponder.backends.embedded import EmbeddedGenerator

    if isinstance(generator, EmbeddedGenerator):
        return EmbeddedTunable(generator.model, generator.tokenizer, generator)
    model = getattr(generator, "model", None)
    if model is not None and type(model).__module__.startswith("transformers"):
        from ponder.training.ttt_hf import HFTunable

        return HFTunable(model, generator.tokenizer, generator)  # type: ignore[attr-defined]
    name = getattr(generator, "name", type(generator).__name__)
    raise ConfigError(
        f"backend {name!r} cannot be fine-tuned: test-time training updates a local model's weights "
        "(the embedded policy, or a transformers model with peft installed); a remote API model has none"
    )


# --- the trainer -----------------------------------------------------------------------------------


def _prompt_seed(prompt: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt}".encode()).digest()[:8], "little")


@dataclass
class TTTConfig:
    select: Literal["sift", "nn", "random", "none"] = "sift"
    k: int = 8  # most examples selected (and gradient steps per pass over them)
    lam: float = 0.1  # SIFT's regularisation (observation noise): smaller avoids redundancy harder
    threshold: float | None = None  # adaptive stop: select while posterior variance is above this
    lr: float = 1e-2
    optimizer: Literal["sgd", "adam"] = "sgd"
    steps_per_example: int = 1
    mode: Literal["full", "lora"] = "full"
    rank: int = 4  # adapter rank (mode "lora")
    alpha: float = 8.0  # adapter scale alpha / rank
    center: bool = True  # subtract the corpus mean before normalising (hidden states share a big common part)
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"bad test-time training setting: {what}")

        need(self.select in SELECTORS, f"select must be one of {list(SELECTORS)}, got {self.select!r}")
        need(self.mode in MODES, f"mode must be one of {list(MODES)}, got {self.mode!r}")
        need(self.optimizer in ("sgd", "adam"), f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        need(isinstance(self.k, int) and self.k >= 1, f"k must be a whole number >= 1, got {self.k!r}")
        need(self.lam > 0, f"lam must be > 0, got {self.lam}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.steps_per_example >= 1, f"steps_per_example must be >= 1, got {self.steps_per_example}")
        need(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        need(
            self.threshold is None or 0 <= self.threshold <= 1,
            f"threshold must be in [0, 1] (posterior variance of unit-norm embeddings), got {self.threshold}",
        )


@dataclass
class TTTCompute:
    """What test-time training spent on one prompt, apart from the strategy's own compute."""

    embed_tokens: int = 0
    embed_flops: float = 0.0
    selection_flops: float = 0.0
    train_steps: int = 0
    train_tokens: int = 0
    train_flops: float = 0.0

    @property
    def total_flops(self) -> float:
        return self.embed_flops + self.selection_flops + self.train_flops


@dataclass
class TTTResult:
    """The strategy's result on the adapted model, the selection, and the fine-tuning's cost."""

    result: StrategyResult
    selection: Selection
    examples: list[Example]
    compute: TTTCompute
    losses: list[float] = field(default_factory=list)

    @property
    def answer(self) -> int | None:
        return self.result.answer

    @property
    def total_flops(self) -> float:
        return self.result.compute.total_flops + self.compute.total_flops


class TestTimeTrainer:
    """Selects, fine-tunes, answers and restores, prompt by prompt, over one corpus.

    The corpus is embedded once, here (its cost is ``corpus_embed_flops``). With the default
    embedder the embeddings come from the policy itself, which is why every adaptation must
    restore the weights before the next prompt is embedded.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        generator: Generator,
        corpus: list[Example],
        config: TTTConfig | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config or TTTConfig()
        self.generator = generator
        self.tunable = tunable_for(generator)
        if not corpus:
            raise ConfigError("the corpus is empty: test-time training needs at least one solved example")
        if self.config.select != "none" and self.config.k > len(corpus):
            raise ConfigError(
                f"k={self.config.k} is larger than the corpus ({len(corpus)} examples): "
                f"ask for at most {len(corpus)}"
            )
        self.corpus = list(corpus)
        self.embedder = embedder or self.tunable.default_embedder()
        texts = [ex.prompt for ex in self.corpus]
        raw = np.asarray(self.embedder.embed(texts), dtype=np.float64)
        self.corpus_embed_flops = self.embedder.flops_per_token * self.embedder.count_tokens(texts)
        self.mean = raw.mean(0) if self.config.center else np.zeros(raw.shape[1])
        self.embeddings = normalize_rows(raw - self.mean)

    def embed_prompt(self, prompt: str) -> np.ndarray:
        return normalize_rows(np.asarray(self.embedder.embed([prompt]), dtype=np.float64)[0] - self.mean)

    def select(self, prompt: str) -> Selection:
        """The examples for ``prompt`` under the configured rule (no training)."""
        cfg = self.config
        if cfg.select == "none":
            return Selection([], [1.0])
        query = self.embed_prompt(prompt)
        if cfg.select == "sift":
            return sift_select(query, self.embeddings, cfg.k, cfg.lam, cfg.threshold)
        if cfg.select == "random":
            # Seeded per prompt, so a rerun draws the same examples for the same question.
            seed = _prompt_seed(prompt, cfg.seed)
            return random_selection(query, self.embeddings, cfg.k, cfg.lam, seed=seed)
        sel = nearest_neighbours(query, self.embeddings, cfg.k, cfg.lam)
        if cfg.threshold is not None:  # the same adaptive rule, on the prefix posterior variances
            keep = next((m for m, v in enumerate(sel.variances) if v <= cfg.threshold), None)
            if keep is not None and keep < len(sel.indices):
                return Selection(sel.indices[:keep], sel.variances[: keep + 1], stopped_early=True)
        return sel

    def solve(
        self,
        prompt: str,
        strategy: Strategy,
        budget: Budget,
        verifier: Verifier | None = None,
        seed: int = 0,
    ) -> TTTResult:
        """Select for ``prompt``, fine-tune, run ``strategy`` on the adapted model, restore."""
        selection = self.select(prompt)
        examples = [self.corpus[i] for i in selection.indices]
        cost = TTTCompute()
        if self.config.select != "none":
            cost.embed_tokens = self.embedder.count_tokens([prompt])
            cost.embed_flops = self.embedder.flops_per_token * cost.embed_tokens
            n, d = self.embeddings.shape
            cost.selection_flops = 2.0 * n * d * (len(selection.indices) + 1)
        with self.tunable.adapted(examples, self.config) as stats:
            result = strategy.run(prompt, self.generator, verifier, budget, seed)
        cost.train_steps, cost.train_tokens, cost.train_flops = stats.steps, stats.tokens, stats.flops
        return TTTResult(result, selection, examples, cost, stats.losses)


def solve_with_ttt(
    question: str,
    strategy: str = "greedy",
    budget: Budget | None = None,
    config: TTTConfig | None = None,
    corpus: list[Example] | str | Path | None = None,
    corpus_per_level: int = 200,
    backend: str | Generator | None = None,
    embedder: Embedder | str | None = None,
    seed: int = 0,
) -> tuple[TTTResult, TestTimeTrainer]:
    """Answer a built-in question (e.g. ``"48+27-13"``) after test-time fine-tuning.

    ``corpus`` is a list of examples, a JSONL file, or None for the built-in train split
    (``corpus_per_level`` per level); ``embedder`` an :class:`Embedder`, ``"policy"`` (default) or
    ``"minilm"`` (the packaged all-MiniLM-L6-v2). The strategy runs within ``budget`` (one sample by
    default) on the adapted model; the verifier, for strategies that need one, is the embedded PRM.
    """
    from ponder.api import resolve_generator, resolve_verifier
    from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
    from ponder.tasks.arithmetic import parse_question

    if not question or not question.strip():
        raise ConfigError("the question is empty")
    problem = parse_question(question)
    runner = make_strategy(strategy)
    generator = resolve_generator(backend)
    if corpus is None:
        examples = task_corpus("train", corpus_per_level, seed=seed)
    elif isinstance(corpus, str | Path):
        examples = load_corpus(corpus)
    else:
        examples = list(corpus)
    if embedder == "minilm":
        from ponder.training.ttt_hf import sentence_embedder

        embedder = sentence_embedder()
    elif embedder in (None, "policy"):
        embedder = None
    elif isinstance(embedder, str):
        raise ConfigError(f"unknown embedder {embedder!r}: use 'policy' or 'minilm'")
    trainer = TestTimeTrainer(generator, examples, config, embedder=embedder)  # type: ignore[arg-type]
    verifier = resolve_verifier(None) if strategy in NEEDS_VERIFIER else None
    result = trainer.solve(problem.prompt, runner, budget or Budget(samples=1), verifier, seed)
    return result, trainer
