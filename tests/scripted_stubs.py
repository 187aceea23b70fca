"""Scripted stub models for budget forcing and sequential revision: they read what a strategy put in
their prompt (thinking so far, earlier attempts) and answer by a rule, so a test knows what each call
must return. One token per character; the prompt counted once per call with one extra (``<bos>``)
token, like the embedded policy and :mod:`stubs`."""

from __future__ import annotations

from ponder.backends.base import Completion, SamplingParams
from ponder.tasks import encode_number
from ponder.verifiers.base import VerifierScore
from stubs import RecordingGenerator

OPEN, CLOSE, WAIT = "<think>", "</think>", "Wait"


def completion(text: str, finish: str, prompt: str, params: SamplingParams) -> Completion:
    emitted = text[: params.max_new_tokens]
    if len(emitted) < len(text):
        finish = "length"
    return Completion(
        text=emitted,
        token_ids=list(range(len(emitted))),
        logprobs=[-0.5] * len(emitted),
        finish_reason=finish,
        prompt_tokens=len(prompt) + 1,
    )


class ThinkStub(RecordingGenerator):
    """Thinks ``think_chars`` characters ("x") after the start of the block and after each "Wait",
    then closes the block; after the block it answers ``A:`` 10 + the number of "Wait"s in its prompt.

    ``honour_stop=False`` plays a backend that ignores stop strings (it writes on past the delimiter);
    ``strip_stop=True`` one that drops the matched stop string from the text (as OpenAI's API does).
    """

    def __init__(
        self,
        think_chars: int = 20,
        honour_stop: bool = True,
        strip_stop: bool = False,
        num_params: int = 1000,
    ) -> None:
        self.think_chars = think_chars
        self.honour_stop = honour_stop
        self.strip_stop = strip_stop
        super().__init__(num_params)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            if CLOSE in p:
                text, finish = "A:" + encode_number(10 + p.count(WAIT), 2), "eos"
            else:
                block = p.split(OPEN, 1)[1] if OPEN in p else p.split("\n", 1)[1]
                since = block.rsplit(WAIT, 1)[-1]
                text = "x" * max(0, self.think_chars - len(since)) + CLOSE
                finish = "stop"
                if not (self.honour_stop and CLOSE in params.stop):
                    text, finish = text + "\nA:99", "eos"
            c = completion(text, finish, p, params)
            if self.strip_stop and c.finish_reason == "stop" and c.text.endswith(CLOSE):
                c.text = c.text[: -len(CLOSE)]  # token ids (and the count) keep the stop string
            self.completion_tokens += c.completion_tokens
            out.append([c] * params.n)
        return out


class RevisionStub(RecordingGenerator):
    """Attempt ``k`` (``k`` = the ``R:`` lines in its prompt) of sample ``s`` answers ``10 + k`` after a
    step line naming ``k`` and ``s``; ``context_length`` is optional."""

    def __init__(self, num_params: int = 1000, context_length: int | None = None) -> None:
        super().__init__(num_params)
        if context_length is not None:
            self.context_length = context_length

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            k = p.count("R:")
            group = []
            for s in range(params.n):
                c = completion(f"t{k}s{s}\nA:" + encode_number(10 + k, 2), "eos", p, params)
                self.completion_tokens += c.completion_tokens
                group.append(c)
            out.append(group)
        return out


class RecordingVerifier:
    """Scores a solution by ``table[answer line]`` (0.5 when absent); records every (prompt, solution)."""

    def __init__(self, table: dict[str, float] | None = None, num_params: int = 500) -> None:
        self.table = table or {}
        self._num_params = num_params
        self.seen: list[tuple[str, str]] = []

    @property
    def num_params(self) -> int:
        return self._num_params

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        out = []
        for p, s in zip(prompts, solutions):
            self.seen.append((p, s))
            last = [line for line in s.split("\n") if line.strip()][-1:] or [""]
            value = self.table.get(last[0], 0.5)
            out.append(VerifierScore(step_scores=[value], outcome=value, tokens=len(p) + len(s) + 1))
        return out
