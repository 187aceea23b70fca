"""Lookahead search (Snell et al. 2024): beam search whose candidate steps are judged by where they lead.

Each open candidate step is rolled out ``lookahead`` further steps greedily (temperature 0), and the
verifier's score at the end of that rollout becomes the candidate's score; the rollout itself is then
dropped (the beam keeps only the candidate step). ``lookahead=0`` is plain beam search. Rollout
tokens, and the verifier tokens of scoring the longer texts, count in the budget; rollouts add no
samples (they sample no new paths).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import SamplingParams
from ponder.strategies.beam_search import BeamSearch
from ponder.strategies.budget import BudgetTracker, derive_seed
from ponder.strategies.sampling import check_param, score_value
from ponder.strategies.search import Path, classify


@dataclass
class Lookahead(BeamSearch):
    lookahead: int = 2  # k: greedy steps rolled out from each candidate before scoring it
    name: str = "lookahead"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param(self.lookahead >= 0, self.name, f"lookahead must be >= 0, got {self.lookahead}")

    def rollout_steps(self) -> int:
        return self.lookahead

    def score_candidates(
        self, tracker: BudgetTracker, prompt: str, cands: list[Path], seed: int
    ) -> str | None:
        tails = {i: "" for i, c in enumerate(cands) if c.status == "open"}
        live = list(tails)
        g_ctx = getattr(tracker.generator, "context_length", None)
        before = tracker.compute.policy_tokens
        for j in range(self.lookahead):
            live = [
                i
                for i in live
                if g_ctx is None or tracker.prompt_tokens(prompt + cands[i].text + tails[i]) < g_ctx
            ]
            if not live:
                break
            params = SamplingParams(
                n=1,
                temperature=0.0,
                max_new_tokens=self.max_step_tokens,
                stop_at_step=True,
                seed=derive_seed(seed, "rollout", j),
            )
            groups = tracker.generate([prompt + cands[i].text + tails[i] for i in live], params, samples=0)
            still_open = []
            for i, group in zip(live, groups):
                tails[i] += group[0].text
                if classify(cands[i].text + tails[i], group[0].finish_reason)[0] == "open":
                    still_open.append(i)
            live = still_open
        # Score each live candidate at the end of its rollout; a rollout too long for the verifier's
        # context falls back to the candidate's own text.
        v_ctx = getattr(tracker.verifier, "context_length", None)
        todo, texts = [], []
        for i, c in enumerate(cands):
            if c.status == "dead":
                continue
            text = c.text + tails.get(i, "")
            if v_ctx is not None and tracker.verifier_tokens(prompt, text) > v_ctx:
                text = c.text
            todo.append(c)
            texts.append(text)
        scores = tracker.score(prompt, texts)
        for c, s in zip(todo, scores):
            c.score = score_value(s, self.aggregation)
        return (
            f"  lookahead: {len(tails)} open candidates rolled out up to {self.lookahead} greedy steps, "
            f"{tracker.compute.policy_tokens - before} policy tokens"
        )
