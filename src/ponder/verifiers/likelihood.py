"""The policy as its own judge: how likely the embedded policy finds a solution, step by step.

A cheap, weak verifier (no extra model): step ``i``'s score is the geometric-mean probability of
the tokens of line ``i`` under the policy, given the prompt and the lines before it; the outcome
is the geometric mean over the whole solution. Confident, fluent text scores high; it knows
nothing the policy does not, which is why it is a member of an ensemble rather than a verifier on
its own.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ponder.errors import ConfigError, ContextLengthError
from ponder.training.model import TinyTransformer, load_model
from ponder.training.tokenizer import CharTokenizer
from ponder.verifiers.base import VerifierScore
from ponder.verifiers.embedded import encode_for_scoring


class PolicyLikelihoodVerifier:
    """Scores solutions by the embedded policy's own token probabilities (teacher-forced)."""

    # Score a token by its probability relative to the likeliest one at that position, so that a
    # choice among several right tokens (which operation comes next, in any order) costs nothing.
    relative_to_best = False

    def __init__(self, model: TinyTransformer, tokenizer: CharTokenizer | None = None, batch_size: int = 64):
        if model.config.head != "lm":
            raise ConfigError("PolicyLikelihoodVerifier needs a policy model (head='lm')")
        self.model = model
        self.tokenizer = tokenizer or CharTokenizer()
        self.batch_size = batch_size
        self.name = "policy-likelihood"

    @property
    def num_params(self) -> int:
        return self.model.num_params()

    def count_tokens(self, prompt: str, solution: str) -> int:
        return len(encode_for_scoring(self.tokenizer, prompt, solution)[0])

    @torch.inference_mode()
    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        encoded = []
        for i, (p, s) in enumerate(zip(prompts, solutions)):
            ids, ends = encode_for_scoring(self.tokenizer, p, s)
            if len(ids) > self.model.config.max_seq_len:
                raise ContextLengthError(
                    f"solution {i} is {len(ids)} tokens with its prompt; the policy's context is "
                    f"{self.model.config.max_seq_len}"
                )
            encoded.append((ids, ends, len(self.tokenizer.encode(p, bos=True))))
        out: list[VerifierScore] = []
        for b in range(0, len(encoded), self.batch_size):
            chunk = encoded[b : b + self.batch_size]
            width = max(len(ids) for ids, _, _ in chunk)
            x = torch.full((len(chunk), width), self.tokenizer.pad_id, dtype=torch.long)
            for i, (ids, _, _) in enumerate(chunk):
                x[i, : len(ids)] = torch.tensor(ids)
            logp = torch.log_softmax(self.model(x).float(), dim=-1)
            for i, (ids, ends, start) in enumerate(chunk):
                if len(ids) == start:  # an empty solution
                    out.append(VerifierScore(step_scores=[], outcome=0.0, tokens=len(ids)))
                    continue
                # Token t is predicted at position t - 1.
                targets = torch.tensor(ids[start:], dtype=torch.long)
                rows = logp[i, torch.arange(start - 1, len(ids) - 1)]
                token_lp = rows.gather(1, targets[:, None]).squeeze(1)
                if self.relative_to_best:
                    token_lp = token_lp - rows.max(dim=-1).values
                token_lp = token_lp.tolist()
                steps, outcome = self._reduce(token_lp, [end - start for end in ends])
                out.append(VerifierScore(step_scores=steps, outcome=outcome, tokens=len(ids)))
        return out

    def _reduce(self, token_lp: list[float], ends: list[int]) -> tuple[list[float], float]:
        """Step scores and outcome from per-token log-probabilities (``ends``: each step's last
        token, counted from the solution's start): geometric mean per step line, and overall."""
        steps, first = [], 0
        for end in ends:
            span = token_lp[first : end + 1]
            steps.append(math.exp(sum(span) / len(span)) if span else 0.0)
            first = end + 1
        return steps, math.exp(sum(token_lp) / len(token_lp)) if token_lp else 0.0


class CheckerLMVerifier(PolicyLikelihoodVerifier):
    """A process verifier that is a language model trained to write what a careful solver would
    write next (see :mod:`ponder.training.train_checker`): a slip is a character it finds unlikely.

    Step ``i``'s score is the lowest probability the checker gives any token up to the end of
    step ``i``, so it falls at the first slip and never recovers, as "still on track" should.
    The outcome is the same over the whole solution. Unlike the policy judging itself, the
    checker was trained on the policy's own samples with every slip corrected, so it does not
    share the policy's confident mistakes.

    A checker trained with ``any_order`` (for a policy that applies the operations in any order)
    has several right next characters where a step picks its operation; it scores each token
    relative to the likeliest one there (``relative_to_best``), so that only a slip costs.
    """

    def __init__(
        self,
        model: TinyTransformer,
        tokenizer: CharTokenizer | None = None,
        batch_size: int = 64,
        relative_to_best: bool = False,
    ):
        super().__init__(model, tokenizer, batch_size)
        self.name = "embedded-checker"
        self.relative_to_best = relative_to_best

    @classmethod
    def load(cls, path: str | Path | None = None) -> CheckerLMVerifier:
        from ponder.training.weights import checker_path

        model, meta = load_model(path or checker_path())
        return cls.from_model(model, meta)

    @classmethod
    def from_model(cls, model: TinyTransformer, meta: dict) -> CheckerLMVerifier:
        """The checker for a loaded model and its saved metadata (which says if it is any-order)."""
        any_order = bool(meta.get("train_config", {}).get("any_order", False))
        return cls(model.eval(), relative_to_best=any_order)

    def _reduce(self, token_lp: list[float], ends: list[int]) -> tuple[list[float], float]:
        steps, lowest, first = [], 0.0, 0
        for end in ends:
            lowest = min([lowest, *token_lp[first : end + 1]])
            steps.append(math.exp(lowest))
            first = end + 1
        return steps, math.exp(min(token_lp, default=-math.inf))
