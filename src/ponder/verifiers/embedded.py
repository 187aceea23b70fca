"""The embedded verifier: one small transformer with a process-reward and an outcome-reward head.

The score of step ``i`` is read at the last token of that step (its delimiter, or the final
character of the answer line). Attention is causal, so scoring a partial solution gives the same
step scores as scoring the full one: search can score prefixes as it grows them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ponder.errors import ConfigError, ContextLengthError
from ponder.tasks.arithmetic import STEP_DELIMITER
from ponder.training.model import TinyTransformer, load_model
from ponder.training.tokenizer import CharTokenizer
from ponder.verifiers.base import Verifier, VerifierScore


def encode_for_scoring(tok: CharTokenizer, prompt: str, solution: str) -> tuple[list[int], list[int]]:
    """Token ids of ``[bos] prompt solution`` and the positions where each step ends."""
    prompt_ids = tok.encode(prompt, bos=True)
    sol_ids = tok.encode(solution)
    step_id = tok.token_of(STEP_DELIMITER)
    ends: list[int] = []
    line_len = 0
    for i, t in enumerate(sol_ids):
        if t == step_id:
            if line_len:  # blank lines are no steps
                ends.append(len(prompt_ids) + i)
            line_len = 0
        else:
            line_len += 1
    if line_len:  # a last line with no delimiter (the answer line)
        ends.append(len(prompt_ids) + len(sol_ids) - 1)
    return prompt_ids + sol_ids, ends


class EmbeddedVerifier:
    """The embedded PRM + ORM as a :class:`~ponder.verifiers.base.Verifier`."""

    def __init__(self, model: TinyTransformer, tokenizer: CharTokenizer | None = None, batch_size: int = 128):
        if model.config.head != "reward":
            raise ConfigError("EmbeddedVerifier needs a reward model (head='reward'), got a policy model")
        self.model = model.eval()
        self.tokenizer = tokenizer or CharTokenizer()
        self.batch_size = batch_size
        self.name = "embedded-prm"

    @classmethod
    def load(cls, path: str | Path | None = None) -> EmbeddedVerifier:
        from ponder.training.weights import verifier_path

        model, _ = load_model(path or verifier_path())
        return cls(model)

    @property
    def num_params(self) -> int:
        return self.model.num_params()

    @property
    def context_length(self) -> int:
        return self.model.config.max_seq_len

    def count_tokens(self, prompt: str, solution: str) -> int:
        """Tokens :meth:`score` runs one (prompt, solution) pair through, for budgets."""
        return len(encode_for_scoring(self.tokenizer, prompt, solution)[0])

    @torch.inference_mode()
    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        encoded = [encode_for_scoring(self.tokenizer, p, s) for p, s in zip(prompts, solutions)]
        limit = self.model.config.max_seq_len
        for i, (ids, _) in enumerate(encoded):
            if len(ids) > limit:
                raise ContextLengthError(
                    f"solution {i} is {len(ids)} tokens with its prompt; the verifier's context is {limit}"
                )
        out: list[VerifierScore] = []
        for b in range(0, len(encoded), self.batch_size):
            chunk = encoded[b : b + self.batch_size]
            width = max(len(ids) for ids, _ in chunk)
            x = torch.full((len(chunk), width), self.tokenizer.pad_id, dtype=torch.long)
            for i, (ids, _) in enumerate(chunk):
                x[i, : len(ids)] = torch.tensor(ids)
            probs = torch.sigmoid(self.model(x).float())
            for i, (ids, ends) in enumerate(chunk):
                steps = probs[i, ends, 0].tolist() if ends else []
                out.append(
                    VerifierScore(
                        step_scores=steps, outcome=float(probs[i, len(ids) - 1, 1]), tokens=len(ids)
                    )
                )
        return out


def load_embedded_verifier(path: str | Path | None = None) -> Verifier:
    """The default embedded verifier (the step checker), or the weights at ``path``: a reward model
    (PRM + ORM heads) becomes an :class:`EmbeddedVerifier`, a language model a step checker."""
    from ponder.verifiers.likelihood import CheckerLMVerifier

    if path is None:
        from ponder.training.weights import checker_path

        return CheckerLMVerifier.load(checker_path())
    model, meta = load_model(path)
    return (
        EmbeddedVerifier(model)
        if model.config.head == "reward"
        else CheckerLMVerifier.from_model(model, meta)
    )
