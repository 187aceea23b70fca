"""The policy as its own judge: how likely the embedded policy finds a solution, step by step.

A cheap, weak verifier (no extra model): step ``i``'s score is the geometric-mean probability of
the tokens of line ``i`` under the policy, given the prompt and the lines before it; the outcome
is the geometric mean over the whole solution. Confident, fluent text scores high; it knows
nothing the policy does not, which is why it is a member of an ensemble rather than a verifier on
its own.
"""

from __future__ import annotations

import math

import torch

from ponder.errors import ConfigError, ContextLengthError
from ponder.training.model import TinyTransformer
from ponder.training.tokenizer import CharTokenizer
from ponder.verifiers.base import VerifierScore
from ponder.verifiers.embedded import encode_for_scoring


class PolicyLikelihoodVerifier:
    """Scores solutions by the embedded policy's own token probabilities (teacher-forced)."""

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
                token_lp = logp[i, torch.arange(start - 1, len(ids) - 1), targets].tolist()
                steps, first = [], start
                for end in ends:
                    span = token_lp[first - start : end - start + 1]
                    steps.append(math.exp(sum(span) / len(span)) if span else 0.0)
                    first = end + 1
                outcome = math.exp(sum(token_lp) / len(token_lp)) if token_lp else 0.0
                out.append(VerifierScore(step_scores=steps, outcome=outcome, tokens=len(ids)))
        return out
