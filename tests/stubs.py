"""Well-behaved stub models for budget and search tests: fast, deterministic, and honest about tokens.

Unlike the fixed-text stubs of test_strategies.py, :class:`StepStub` respects ``max_new_tokens``
and ``stop_at_step`` (so a strategy's worst-case planning is exercised as with a real model), and
:class:`MarkerVerifier` scores each line by a rule, so the path a search should find is known.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from ponder.backends.base import Completion, SamplingParams
from ponder.tasks import encode_number, parse_question
from ponder.verifiers.base import VerifierScore

PROMPT = parse_question("48+27-13").prompt
MARK = "*"

# chooser(prefix_lines, sample_index, n, rng, greedy) -> the next line (without the delimiter)
Chooser = Callable[[list[str], int, int, random.Random, bool], str]


def marker_answer(lines: list[str]) -> str:
    """The answer line after ``lines``: 10 + the number of marked lines, so it tells the path."""
    return "A:" + encode_number(10 + sum(MARK in line for line in lines), 2)


def one_marked_per_call(depth: int) -> Chooser:
    """``depth`` step lines then the answer. Of the n samples of one prompt exactly one (which one
    depends on the seed) gets a marked line; greedy (temperature 0) never does."""

    def choose(lines: list[str], i: int, n: int, rng: random.Random, greedy: bool) -> str:
        if len(lines) >= depth:
            return marker_answer(lines)
        if greedy:
            return f"s{len(lines)}g"
        marked = i == rng.randrange(n)
        return f"s{len(lines)}{MARK if marked else ''}v{i}"

    return choose


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little"))


class RecordingGenerator:
    """What every scripted test generator shares: a parameter count, the calls it received and
    the tokens it emitted (for checking the accounting)."""

    def __init__(self, num_params: int = 1000) -> None:
        self._num_params = num_params
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.completion_tokens = 0

    @property
    def num_params(self) -> int:
        return self._num_params


class StepStub(RecordingGenerator):
    """A generator that writes one line per step, chosen by ``chooser``; one token per character,
    the prompt counted once per call with one extra (``<bos>``) token, like the embedded policy."""

    def __init__(self, chooser: Chooser, num_params: int = 1000) -> None:
        super().__init__(num_params)
        self.chooser = chooser

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            group = []
            lines = [line for line in p[len(PROMPT) :].split("\n") if line]
            for i in range(params.n):
                # Every sample of a prompt sees the same random stream (seeded by the call's seed
                # and the prompt only), so "which sample is marked" is one draw per prompt, and
                # prompts sharing a call do not change each other's samples.
                text, finish = self._continue(lines, i, params, _rng(params.seed, p))
                emitted = text[: params.max_new_tokens]
                if len(emitted) < len(text):
                    finish = "length"
                self.completion_tokens += len(emitted)
                group.append(
                    Completion(
                        text=emitted,
                        token_ids=list(range(len(emitted))),
                        logprobs=[-0.5] * len(emitted),
                        finish_reason=finish,
                        prompt_tokens=len(p) + 1,
                    )
                )
            out.append(group)
        return out

    def _continue(
        self, lines: list[str], i: int, params: SamplingParams, rng: random.Random
    ) -> tuple[str, str]:
        greedy = params.temperature == 0
        written: list[str] = []
        while True:
            line = self.chooser(lines + written, i, params.n, rng, greedy)
            written.append(line)
            if line.startswith("A:"):
                return "\n".join(written), "eos"
            if params.stop_at_step:
                return line + "\n", "stop"


class MarkerVerifier:
    """Scores each line: ``scores_by(line, previous_lines)``; by default a marked line 0.9, other
    step lines 0.2, and the answer line 0.9 when every step was marked, else 0.3."""

    def __init__(self, rule: Callable[[str, list[str]], float] | None = None, num_params: int = 500) -> None:
        self.rule = rule or self.default_rule
        self._num_params = num_params
        self.calls: list[list[str]] = []

    @staticmethod
    def default_rule(line: str, previous: list[str]) -> float:
        if line.startswith("A:"):
            return 0.9 if previous and all(MARK in p for p in previous) else 0.3
        return 0.9 if MARK in line else 0.2

    @property
    def num_params(self) -> int:
        return self._num_params

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        self.calls.append(list(solutions))
        out = []
        for p, s in zip(prompts, solutions):
            lines = [line for line in s.split("\n") if line.strip()]
            steps = [self.rule(line, lines[:j]) for j, line in enumerate(lines)]
            out.append(
                VerifierScore(
                    step_scores=steps, outcome=steps[-1] if steps else None, tokens=len(p) + len(s) + 1
                )
            )
        return out
