"""Instant stub models for load tests, benchmarks and tests of the server (``python:`` backend specs).

:class:`InstantGenerator` writes the reference solution of a built-in task prompt at once (one
token per character), so a server in front of it measures its own overhead, not a model's::

    models:
      - name: instant
        backend: python:ponder.serve.testing:InstantGenerator
        options: {delay_s: 0.0, spread: 1}
        verifier: python:ponder.serve.testing:InstantVerifier

``spread`` > 1 makes sample ``s`` of each call answer ``right + s % spread`` (distinct answers for
``n`` > 1); ``delay_s`` sleeps in each call (a slow upstream); ``fail`` makes every call raise, as an
unreachable (``"connection"``) or timing-out (``"timeout"``) upstream does.
:class:`AsyncInstantGenerator` and :class:`AsyncInstantVerifier` add async twins (``agenerate``,
``ascore``), as HTTP backends have, so that the server runs their searches on its event loop.
"""

from __future__ import annotations

import asyncio
import time

from ponder.backends.base import Completion, SamplingParams
from ponder.tasks.arithmetic import (
    ANSWER_PREFIX,
    QUESTION_PREFIX,
    STEP_DELIMITER,
    Problem,
    encode_number,
    parse_question,
    to_display,
)
from ponder.verifiers.base import VerifierScore


def _problem(prompt: str) -> Problem | None:
    first = prompt.split(STEP_DELIMITER, 1)[0]
    if not first.startswith(QUESTION_PREFIX):
        return None
    try:
        return parse_question(to_display(first[len(QUESTION_PREFIX) :]))
    except Exception:
        return None


def _base_prompt(prompt: str) -> str:
    return prompt.split(STEP_DELIMITER, 1)[0] + STEP_DELIMITER


class InstantGenerator:
    """A generator with no model: the right solution (or an echo of a non-task prompt), at once."""

    name = "instant"

    def __init__(
        self, delay_s: float = 0.0, spread: int = 1, fail: str | None = None, num_params: int = 1000
    ) -> None:
        if fail not in (None, "connection", "timeout"):
            raise ValueError(f"fail must be 'connection', 'timeout' or absent, got {fail!r}")
        self.delay_s = float(delay_s)
        self.spread = max(1, int(spread))
        self.fail = fail
        self._num_params = int(num_params)
        self.calls = 0

    @property
    def num_params(self) -> int:
        return self._num_params

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(prompt) + 1

    def _solution(self, prompt: str, sample: int) -> str:
        problem = _problem(prompt)
        if problem is None:
            return f"You said: {prompt.strip()[-200:]}"
        steps = [s.render(problem.width) for s in problem.steps]
        answer = problem.answer + sample % self.spread
        return STEP_DELIMITER.join([*steps, f"{ANSWER_PREFIX}{encode_number(answer, problem.width)}"])

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self._start_call()
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._complete(prompts, params)

    def _start_call(self) -> None:
        self.calls += 1
        if self.fail == "connection":
            raise ConnectionError("the upstream refused the connection")
        if self.fail == "timeout":
            raise TimeoutError("the upstream did not answer in time")

    def _complete(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            written = prompt[len(_base_prompt(prompt)) :] if _problem(prompt) else ""
            group = []
            for s in range(params.n):
                full = self._solution(prompt, s)
                rest = full[len(written) :] if full.startswith(written) else full
                finish = "eos"
                if params.stop_at_step and STEP_DELIMITER in rest:
                    rest, finish = rest[: rest.index(STEP_DELIMITER) + 1], "stop"
                if len(rest) > params.max_new_tokens:
                    rest, finish = rest[: params.max_new_tokens], "length"
                group.append(
                    Completion(
                        text=rest,
                        token_ids=[0] * len(rest),
                        logprobs=[-0.1] * len(rest),
                        finish_reason=finish,
                        prompt_tokens=len(prompt) + 1,
                    )
                )
            out.append(group)
        return out


class AsyncInstantGenerator(InstantGenerator):
    """:class:`InstantGenerator` with an async twin of ``generate``, as an HTTP backend has: the
    server runs its searches on the event loop (``delay_s`` is then an ``asyncio.sleep``)."""

    async def agenerate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self._start_call()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._complete(prompts, params)


class InstantVerifier:
    """Scores each step 0.9 and the answer line 0.9 when it is right, else 0.2."""

    name = "instant-verifier"

    def __init__(self, num_params: int = 500) -> None:
        self._num_params = num_params

    @property
    def num_params(self) -> int:
        return self._num_params

    def count_tokens(self, prompt: str, solution: str) -> int:
        return len(prompt) + len(solution) + 1

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        from ponder.tasks.answers import extract_answer

        out = []
        for prompt, solution in zip(prompts, solutions):
            problem = _problem(prompt)
            lines = [line for line in solution.split(STEP_DELIMITER) if line.strip()]
            scores = []
            for line in lines:
                if line.startswith(ANSWER_PREFIX):
                    right = problem is not None and extract_answer(line) == problem.answer
                    scores.append(0.9 if right else 0.2)
                else:
                    scores.append(0.9)
            out.append(
                VerifierScore(
                    step_scores=scores,
                    outcome=scores[-1] if scores else None,
                    tokens=self.count_tokens(prompt, solution),
                )
            )
        return out


class AsyncInstantVerifier(InstantVerifier):
    """:class:`InstantVerifier` with an async twin of ``score``."""

    async def ascore(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        await asyncio.sleep(0)  # a real await: the search really is suspended here
        return self.score(prompts, solutions)
