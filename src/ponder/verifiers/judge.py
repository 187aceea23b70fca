"""LLM-as-judge verifiers: a model is asked whether a solution (or its last step) is correct, and
the score is its probability of answering "Yes" with the first token:

    score = P(yes) / (P(yes) + P(no))

summed over the spellings of each word ("Yes", " yes", ...). Two ways to get those probabilities:

- :class:`JudgeVerifier` works with any ponder :class:`~ponder.backends.base.Generator`: one
  greedy token per question, asked with ``SamplingParams(top_logprobs=k)``. A backend that returns
  ``Completion.top_logprobs`` gives the formula above; one that returns only the emitted token's
  log-probability gives ``P(token)`` when it said yes and ``1 - P(token)`` when it said no (the rest
  of the mass counted as the other answer); a first token that is neither scores ``undecided``.
- :class:`HFJudgeVerifier` runs a transformers causal LM directly and reads the whole next-token
  distribution, so the formula is exact.

``mode="outcome"`` asks once per solution (one score: the step score and the outcome);
``mode="steps"`` asks once per step about the solution so far ("is the last step correct?"), a
process reward from a model never trained as one, at one question per step.

Budgets: a question costs its prompt tokens plus one generated token, counted from what the
generator reports (``prompt_tokens`` less any cached part, plus the emitted token) and estimated
beforehand with the generator's ``count_prompt_tokens`` (or one token per byte) plus one. FLOPs are
2 x the judge model's parameters x those tokens. A step judge re-reads the solution so far for
every step, so its cost grows with the square of the number of steps: step search plans each
round assuming a verifier reads no more than the policy wrote, and under a step judge it stops
earlier than planned (the exact check before every call still keeps it within the budget).
"""

from __future__ import annotations

import math
from typing import Any

from ponder.backends.base import Completion, Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.verifiers.base import VerifierScore
from ponder.verifiers.formats import question_text, split_steps

JUDGE_MODES = ("outcome", "steps")
OUTCOME_TEMPLATE = (
    "Here is a problem and a proposed solution.\n\nProblem:\n{question}\n\nSolution:\n{solution}\n\n"
    "Is the solution correct? Answer Yes or No.\nAnswer:"
)
STEP_TEMPLATE = (
    "Here is a problem and the first steps of a solution.\n\nProblem:\n{question}\n\n"
    "Steps so far:\n{solution}\n\nIs the last step correct? Answer Yes or No.\nAnswer:"
)
YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES")
NO_WORDS = ("No", " No", "no", " no", "NO")


def _word(token: str) -> str:
    """A token's text as a bare lower-case word (SentencePiece / byte-level space marks dropped)."""
    return token.replace("\u2581", " ").replace("\u0120", " ").strip().strip(".,:;!\"'*").lower()


def _as_pairs(entry: Any) -> list[tuple[str, float]]:
    """One position's top log-probs, as a dict, a list of pairs, or objects with token/logprob."""
    if isinstance(entry, dict):
        return [(str(k), float(v)) for k, v in entry.items()]
    pairs = []
    for item in entry or []:
        if isinstance(item, tuple | list) and len(item) == 2:
            pairs.append((str(item[0]), float(item[1])))
        elif hasattr(item, "token") and hasattr(item, "logprob"):
            pairs.append((str(item.token), float(item.logprob)))
    return pairs


def yes_probability(completion: Completion, undecided: float = 0.5) -> float:
    """P(yes) / (P(yes) + P(no)) of the first generated token (see the module docstring)."""
    top = getattr(completion, "top_logprobs", None)
    if top:
        yes = no = 0.0
        for token, lp in _as_pairs(top[0]):
            word = _word(token)
            if word == "yes":
                yes += math.exp(lp)
            elif word == "no":
                no += math.exp(lp)
        if yes + no > 0:
            return yes / (yes + no)
    if completion.logprobs and completion.text.strip():
        word = _word(completion.text)
        p = math.exp(min(0.0, completion.logprobs[0]))
        if word.startswith("yes"):
            return p
        if word.startswith("no"):
            return 1.0 - p
    return undecided


class _Judge:
    """Questions from (prompt, solution) pairs; subclasses answer them."""

    def __init__(
        self,
        mode: str = "outcome",
        template: str | None = None,
        step_template: str | None = None,
        step_delimiter: str = "\n",
    ) -> None:
        if mode not in JUDGE_MODES:
            raise ConfigError(f"unknown judge mode {mode!r}: choose one of {list(JUDGE_MODES)}")
        self.mode = mode
        self.template = template or OUTCOME_TEMPLATE
        self.step_template = step_template or STEP_TEMPLATE
        for name, t in (("template", self.template), ("step template", self.step_template)):
            if "{question}" not in t or "{solution}" not in t:
                raise ConfigError(f"the judge {name} must contain {{question}} and {{solution}}: {t!r}")
        self.step_delimiter = step_delimiter

    def counted_questions(self, prompt: str, solution: str) -> list[str]:
        """The questions :meth:`questions` asks, or for a solution with none yet the one question
        an empty solution would be (the overhead budget planning adds to every text it scores)."""
        qs = self.questions(prompt, solution)
        if qs or self.mode == "steps":
            return qs
        return [self.template.format(question=question_text(prompt), solution="")]

    def questions(self, prompt: str, solution: str) -> list[str]:
        """The judge's questions about one solution: one (outcome) or one per step (steps)."""
        q = question_text(prompt)
        if self.mode == "outcome":
            return [self.template.format(question=q, solution=solution.strip())] if solution.strip() else []
        steps = split_steps(solution, self.step_delimiter)
        return [
            self.step_template.format(question=q, solution="\n".join(steps[: k + 1]))
            for k in range(len(steps))
        ]

    def _assemble(
        self, per_pair: list[list[str]], probs: list[float], tokens: list[int]
    ) -> list[VerifierScore]:
        out, k = [], 0
        for qs in per_pair:
            p, t = probs[k : k + len(qs)], sum(tokens[k : k + len(qs)])
            k += len(qs)
            outcome = p[-1] if self.mode == "outcome" and p else None
            out.append(VerifierScore(step_scores=p, outcome=outcome, tokens=t))
        return out


class JudgeVerifier(_Judge):
    """A ponder Generator as judge (any backend; exact with backends that return top log-probs)."""

    def __init__(
        self,
        generator: Generator,
        mode: str = "outcome",
        *,
        top_logprobs: int = 20,
        undecided: float = 0.5,
        template: str | None = None,
        step_template: str | None = None,
        step_delimiter: str = "\n",
    ) -> None:
        super().__init__(mode, template, step_template, step_delimiter)
        if not isinstance(generator, Generator):
            raise ConfigError(f"a judge needs a ponder Generator, got {type(generator).__name__}")
        if not 0.0 <= undecided <= 1.0:
            raise ConfigError(f"undecided must be a probability, got {undecided}")
        self.generator = generator
        self.top_logprobs = top_logprobs
        self.undecided = undecided
        self.name = f"judge:{getattr(generator, 'name', type(generator).__name__)}"

    @property
    def num_params(self) -> int:
        return self.generator.num_params

    def _params(self) -> SamplingParams:
        return SamplingParams(n=1, temperature=0.0, max_new_tokens=1, seed=0, top_logprobs=self.top_logprobs)

    def count_tokens(self, prompt: str, solution: str) -> int:
        count = getattr(self.generator, "count_prompt_tokens", None)
        total = 0
        for q in self.counted_questions(prompt, solution):
            total += (int(count(q)) if callable(count) else len(q.encode()) + 1) + 1
        return total

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        per_pair = [self.questions(p, s) for p, s in zip(prompts, solutions)]
        flat = [q for qs in per_pair for q in qs]
        probs: list[float] = []
        tokens: list[int] = []
        if flat:
            groups = self.generator.generate(flat, self._params())
            for group in groups:
                c = group[0]
                probs.append(yes_probability(c, self.undecided))
                tokens.append(c.prompt_tokens - c.cached_prompt_tokens + c.completion_tokens)
        return self._assemble(per_pair, probs, tokens)


class HFJudgeVerifier(_Judge):
    """A transformers causal LM as judge, reading its full next-token distribution."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        mode: str = "outcome",
        *,
        yes_words: tuple[str, ...] = YES_WORDS,
        no_words: tuple[str, ...] = NO_WORDS,
        batch_size: int = 8,
        device: str | None = "cpu",
        template: str | None = None,
        step_template: str | None = None,
        step_delimiter: str = "\n",
    ) -> None:
        from ponder.verifiers.hf import _pick_device, non_embedding_params

        super().__init__(mode, template, step_template, step_delimiter)
        if batch_size < 1:
            raise ConfigError(f"verifier batch_size must be >= 1, got {batch_size}")
        self.yes_ids, self.no_ids = answer_token_ids(tokenizer, yes_words, no_words)
        self.device = _pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        self._num_params = non_embedding_params(model)
        self.name = "hf-judge"

    @property
    def num_params(self) -> int:
        return self._num_params

    def encode(self, question: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(question)["input_ids"])

    def count_tokens(self, prompt: str, solution: str) -> int:
        return sum(len(self.encode(q)) for q in self.counted_questions(prompt, solution))

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        import torch

        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        per_pair = [self.questions(p, s) for p, s in zip(prompts, solutions)]
        encoded = [self.encode(q) for qs in per_pair for q in qs]
        probs = [0.0] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idxs = order[b : b + self.batch_size]
                width = max(len(encoded[i]) for i in idxs)
                x = torch.full((len(idxs), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros_like(x)
                for r, i in enumerate(idxs):
                    x[r, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[r, : len(encoded[i])] = 1
                out = self.model(input_ids=x.to(self.device), attention_mask=mask.to(self.device))
                logits = (out.logits if hasattr(out, "logits") else out[0]).float()
                last = torch.tensor([len(encoded[i]) - 1 for i in idxs], device=logits.device)
                dist = torch.softmax(logits[torch.arange(len(idxs)), last], dim=-1)
                yes = dist[:, self.yes_ids].sum(-1)
                no = dist[:, self.no_ids].sum(-1)
                for r, i in enumerate(idxs):
                    probs[i] = float(yes[r] / (yes[r] + no[r]))
        return self._assemble(per_pair, probs, [len(e) for e in encoded])


def answer_token_ids(
    tokenizer: Any, yes_words: tuple[str, ...], no_words: tuple[str, ...]
) -> tuple[list[int], list[int]]:
    """First-token ids of each spelling of yes and of no; a token both start with is dropped."""

    def first_ids(words: tuple[str, ...]) -> set[int]:
        ids = set()
        for w in words:
            enc = tokenizer(w, add_special_tokens=False)["input_ids"]
            if enc:
                ids.add(int(enc[0]))
        return ids

    yes, no = first_ids(yes_words), first_ids(no_words)
    shared = yes & no
    yes, no = sorted(yes - shared), sorted(no - shared)
    if not yes or not no:
        raise ConfigError(
            f"the judge's tokenizer cannot tell yes from no by the first token of {yes_words} / {no_words}"
        )
    return yes, no
