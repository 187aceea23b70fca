"""Budget forcing (s1, Muennighoff et al. 2025) for models that think in a delimited block.

The model thinks inside ``<think> ... </think>`` (the delimiters are parameters), then answers.
Budget forcing controls how long it thinks, over the plain Generator protocol (a stop string and
continuation prompts):

- **cap**: thinking is generated with ``think_end`` as a stop string and at most
  ``max_thinking_tokens`` tokens; when the cap (or the budget) is reached first, ponder ends the
  block itself by appending ``think_end`` (and ``answer_prefix``, e.g. ``"Final Answer:"``) and lets
  the model answer;
- **extend**: when the model ends the block (emits ``think_end``, or stops) before it has thought
  ``min_thinking_tokens`` tokens, the delimiter is dropped, ``extension`` (``"Wait"``) is appended
  to its thinking, and it goes on thinking from there; at most ``max_extensions`` times, after
  which its end of thinking is accepted.

Thinking tokens are the tokens the model generated inside the block (extension words are ponder's,
not counted). ``think_start`` is appended to the prompt to open the block; leave it empty when the
model or its chat template opens the block itself (everything before ``think_end`` is thinking).
Decoding is greedy by default, as in s1.

The budget is checked before every call, and every thinking call is sized so that the answer call
(up to ``max_answer_tokens``) still fits after it: a tight budget shortens the thinking, never the
answer. The answer is read from the text after the block (its last ``A:`` line, for the built-in
task); if it has none, from the last one written while thinking.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies.base import Candidate, StrategyResult
from ponder.strategies.budget import Budget, BudgetTracker, Cost, derive_seed
from ponder.strategies.sampling import check_param
from ponder.tasks.answers import extract_answer
from ponder.verifiers.base import Verifier


@dataclass
class BudgetForcing:
    min_thinking_tokens: int = 0  # end of thinking before this is suppressed ("Wait" appended)
    max_thinking_tokens: int = 1024  # thinking is cut here and the end delimiter forced
    think_start: str = ""  # appended to the prompt to open the block ("" if the model opens it)
    think_end: str = "</think>"
    extension: str = "Wait"  # appended in place of a suppressed end of thinking
    max_extensions: int = 2  # suppressions at most; then the model's end of thinking stands
    answer_prefix: str = ""  # appended after a forced end of thinking, e.g. "Final Answer:"
    max_answer_tokens: int = 160
    temperature: float = 0.0
    name: str = "budget_forcing"

    def __post_init__(self) -> None:
        for what in ("min_thinking_tokens", "max_thinking_tokens", "max_extensions"):
            value = getattr(self, what)
            check_param(value >= 0, self.name, f"{what} must be >= 0, got {value}")
        check_param(
            self.min_thinking_tokens <= self.max_thinking_tokens,
            self.name,
            f"min_thinking_tokens ({self.min_thinking_tokens}) must not be above max_thinking_tokens "
            f"({self.max_thinking_tokens})",
        )
        check_param(bool(self.think_end), self.name, "think_end must not be empty")
        check_param(
            self.max_answer_tokens >= 1,
            self.name,
            f"max_answer_tokens must be >= 1, got {self.max_answer_tokens}",
        )
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        if not prompt.strip():
            raise ConfigError(f"strategy {self.name!r} got an empty prompt")
        tracker = BudgetTracker(budget, self.name, generator)
        opens = bool(self.think_start) and not prompt.endswith(self.think_start)
        base = prompt + self.think_start if opens else prompt
        closing = self.think_end + self.answer_prefix
        # Whatever may follow the thinking generated so far in the answer call's prompt.
        tail = self.extension + closing
        tracker.require_minimum(
            tracker.generation_cost([base + closing], 1, self.max_answer_tokens, samples=1),
            f"an answer of up to {self.max_answer_tokens} tokens after an empty thinking block",
        )
        context = getattr(generator, "context_length", None)
        thinking, thought, extensions, calls = "", 0, 0, 0
        trace: list[str] = []
        forced: str | None = None
        while True:
            room = self.max_thinking_tokens - thought
            if room <= 0:
                forced = f"the thinking cap of {self.max_thinking_tokens} tokens was reached"
                break
            if context is not None:
                room = min(room, context - tracker.prompt_tokens(base + thinking + tail) - 1)
            charge = 1 if calls == 0 else 0

            def cost(m: int, charge: int = charge, thinking: str = thinking) -> Cost:
                think = tracker.generation_cost([base + thinking], 1, m, samples=charge)
                # The answer call after m more thinking tokens: they are counted as its prompt.
                answer = tracker.generation_cost(
                    [base + thinking + tail], 1, m + self.max_answer_tokens, samples=0
                )
                return think + answer

            m = tracker.largest(cost, max(0, room))
            if m == 0:
                forced = "the budget (or the context) has no room for more thinking"
                break
            params = SamplingParams(
                n=1,
                temperature=self.temperature,
                max_new_tokens=m,
                stop=(self.think_end,),
                seed=derive_seed(seed, "think", calls),
            )
            completion = tracker.generate([base + thinking], params, samples=charge)[0][0]
            calls += 1
            thought += completion.completion_tokens
            text = completion.text
            # Ended by the model: the delimiter (kept in the text, or dropped by a backend that
            # strips stop strings), or the end of its output.
            ended = completion.finish_reason in ("stop", "eos")
            cut = text.find(self.think_end)
            if cut >= 0:  # also catches a backend that ignores stop strings
                text, ended = text[:cut], True
            thinking += text
            note = f"thinking call {calls}: {completion.completion_tokens} tokens ({thought} in all)"
            if not ended:
                if completion.completion_tokens == 0:
                    forced = "the model produced no more thinking"
                    trace.append(note)
                    break
                trace.append(note + f", stopped at its allowance of {m}")
                continue
            if thought < self.min_thinking_tokens and extensions < self.max_extensions:
                thinking += self.extension
                extensions += 1
                trace.append(
                    note + f", ended thinking before the minimum of {self.min_thinking_tokens}: "
                    f"appended {self.extension!r} (extension {extensions} of {self.max_extensions})"
                )
                continue
            trace.append(note + ", ended thinking")
            break
        trace.append(
            f"thinking: {thought} tokens in {calls} call(s), {extensions} extension(s); "
            + (f"end forced: {forced}" if forced else "ended by the model")
        )
        answer_prompt = base + thinking + self.think_end + (self.answer_prefix if forced else "")
        charge = 1 if calls == 0 else 0
        room = self.max_answer_tokens
        cap = tracker.largest(lambda m: tracker.generation_cost([answer_prompt], 1, m, samples=charge), room)
        answer_text = ""
        if cap == 0:  # only when a backend's token counts broke the plan
            trace.append("no budget left for the answer")
        else:
            params = SamplingParams(
                n=1, temperature=self.temperature, max_new_tokens=cap, seed=derive_seed(seed, "answer")
            )
            answer_text = tracker.generate([answer_prompt], params, samples=charge)[0][0].text
        answer = extract_answer(answer_text)
        if answer is None:
            answer = extract_answer(thinking)
        trace.append(f"answer: {answer}")
        candidate = Candidate(text=answer_prompt[len(prompt) :] + answer_text, answer=answer)
        return StrategyResult(answer=answer, candidates=[candidate], compute=tracker.compute, trace=trace)
