"""Monte-Carlo tree search over solution steps, with the PRM as the value function.

A node is a partial solution (a path of steps). Each iteration

1. **selects** a leaf: from the root, repeatedly the child with the highest
   ``Q + exploration * P * sqrt(N_parent) / (1 + N)`` (PUCT, ``selection="puct"``) or
   ``Q + exploration * sqrt(ln N_parent / N)`` (UCT), skipping subtrees with nothing left to expand;
   ``Q`` is a node's mean backed-up value, ``N`` its visits, ``P`` the policy's prior for the step
   (its length-normalised probability, normalised over the siblings);
2. **expands** it: ``branching`` candidate next steps sampled from ``prompt + path``, stopping at the
   step delimiter (duplicates merged);
3. **evaluates** each new child by the verifier's score of the partial solution (aggregated as in
   the other searches), or, with ``rollout=k``, of the solution after ``k`` greedy steps rolled out
   from it (the rollout is scored, then dropped, as in lookahead search); a dead child is worth 0;
4. **backs up**: each child starts with one visit and its own value; the expanded leaf and every
   ancestor gain a visit and the best new child's value (the leaf is worth what its best
   continuation is).

A child that ends in an answer line is terminal and never expanded. The search stops when no
expandable leaf is left: every path answered, dead, ``max_rounds`` steps deep, or unaffordable.

**Budget.** As in beam search, the samples limit N bounds the width of the tree, not its size: at
most N candidate steps are generated at each depth (``samples`` counts the widest depth), so
``Budget(samples=16)`` gives MCTS the tree size beam search with N=16 can reach. Before every
expansion its worst case (``branching`` steps of ``max_step_tokens``, their rollouts, all scored) is
checked against the budget; a leaf whose expansion does not fit is closed (a cheaper, shallower
one may still fit), so the search never spends past a limit.

**Answer.** By value: the answered path with the highest verifier score (an answered leaf is never
revisited, so its value is its own score); ``weighted=True`` sums the scores per answer. Visit counts
steer the search; the trace names the most-visited path. If nothing was answered, the most-visited
open path is completed greedily with what the budget has left.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ponder.backends.base import Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies.base import StrategyResult
from ponder.strategies.best_of_n import pick_by_score
from ponder.strategies.budget import Budget, BudgetExhausted, BudgetTracker, Cost, derive_seed
from ponder.strategies.lookahead import Lookahead
from ponder.strategies.sampling import check_param
from ponder.strategies.search import (
    Path,
    StepSearch,
    classify,
    complete_greedily,
    retire_unfittable,
    round_cost,
    score_paths,
)
from ponder.verifiers.base import Verifier

SELECTIONS = ("puct", "uct")


@dataclass(eq=False)
class _Node:
    path: Path
    depth: int
    parent: _Node | None = None
    prior: float = 1.0
    visits: int = 0
    value_sum: float = 0.0
    children: list[_Node] = field(default_factory=list)
    closed: bool = False  # nothing left to expand at or below it

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


def _close(node: _Node) -> None:
    """Close ``node``, and every ancestor whose children are now all closed."""
    node.closed = True
    parent = node.parent
    while parent is not None and not parent.closed and all(c.closed for c in parent.children):
        parent.closed = True
        parent = parent.parent


def _priors(logprob_means: list[float]) -> list[float]:
    """Softmax of the steps' mean token log-probabilities."""
    top = max(logprob_means)
    weights = [math.exp(x - top) for x in logprob_means]
    total = sum(weights)
    return [w / total for w in weights]


@dataclass
class MCTS(StepSearch):
    branching: int = 4  # candidate next steps sampled per expansion
    exploration: float = 1.0  # weight of the exploration term
    selection: str = "puct"  # "puct" (policy prior) or "uct"
    rollout: int = 0  # greedy steps rolled out from each new child before it is scored
    name: str = "mcts"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param(self.branching >= 1, self.name, f"branching must be >= 1, got {self.branching}")
        check_param(
            self.n is None or self.n >= self.branching,
            self.name,
            f"n ({self.n}) must be at least branching ({self.branching}): an expansion needs "
            f"{self.branching} candidates at a depth",
        )
        check_param(self.exploration >= 0, self.name, f"exploration must be >= 0, got {self.exploration}")
        check_param(
            self.selection in SELECTIONS,
            self.name,
            f"selection must be one of {list(SELECTIONS)}, got {self.selection!r}",
        )
        check_param(self.rollout >= 0, self.name, f"rollout must be >= 0, got {self.rollout}")

    # --- the four steps ----------------------------------------------------------------------------

    def _score(self, parent: _Node, child: _Node) -> float:
        if self.selection == "uct":
            bonus = math.sqrt(math.log(max(parent.visits, 1)) / max(child.visits, 1))
        else:
            bonus = child.prior * math.sqrt(parent.visits) / (1 + child.visits)
        return child.q + self.exploration * bonus

    def _select(self, root: _Node) -> _Node | None:
        node = root
        while not root.closed:
            if not node.children:
                return node
            options = [c for c in node.children if not c.closed]
            if not options:  # only reached if a close did not propagate; repair and start over
                _close(node)
                node = root
                continue
            # max() keeps the first of equals: ties go to generation order, so a seed fixes the path.
            node = max(options, key=lambda c: self._score(node, c))
        return None

    def _expand(
        self, tracker: BudgetTracker, prompt: str, leaf: _Node, k: int, charge: int, seed: int
    ) -> list[_Node]:
        params = SamplingParams(
            n=k,
            temperature=self.temperature,
            max_new_tokens=self.max_step_tokens,
            stop_at_step=True,
            seed=seed,
        )
        group = tracker.generate([prompt + leaf.path.text], params, samples=charge)[0]
        children: list[_Node] = []
        weight: list[float] = []
        by_text: dict[str, int] = {}
        for completion in group:
            text = leaf.path.text + completion.text
            # Length-normalised, so that a short step is not favoured for being short.
            lps = completion.logprobs
            mean_lp = sum(lps) / len(lps) if lps else 0.0
            if text in by_text:  # the same step again: one child, its prior mass summed below
                continue
            status, answer = classify(text, completion.finish_reason)
            by_text[text] = len(children)
            children.append(_Node(Path(text, status, answer), leaf.depth + 1, parent=leaf))
            weight.append(mean_lp)
        counts = Counter(leaf.path.text + c.text for c in group)
        priors = _priors(weight)
        total = sum(p * counts[c.path.text] for p, c in zip(priors, children))
        for child, p in zip(children, priors):
            child.prior = p * counts[child.path.text] / total
        return children

    def _evaluate(self, tracker: BudgetTracker, prompt: str, children: list[_Node], seed: int) -> None:
        paths = [c.path for c in children]
        retire_unfittable(tracker, prompt, paths)
        if self.rollout:
            scorer = Lookahead(
                lookahead=self.rollout,
                max_step_tokens=self.max_step_tokens,
                aggregation=self.aggregation,
                temperature=self.temperature,
            )
            scorer.score_candidates(tracker, prompt, paths, seed)
        else:
            score_paths(tracker, prompt, paths, self.aggregation)

    @staticmethod
    def _backup(leaf: _Node, children: list[_Node]) -> float:
        values = []
        for child in children:
            value = child.path.score if child.path.status != "dead" and child.path.score is not None else 0.0
            child.visits, child.value_sum = 1, value
            values.append(value)
            if child.path.status != "open":
                child.closed = True
        best = max(values, default=0.0)
        node: _Node | None = leaf
        while node is not None:
            node.visits += 1
            node.value_sum += best
            node = node.parent
        return best

    # --- the search --------------------------------------------------------------------------------

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        if not prompt.strip():
            raise ConfigError(f"strategy {self.name!r} got an empty prompt")
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        width, branching, step = self.width(budget), self.branching, self.max_step_tokens
        root = _Node(Path(""), 0, visits=1)
        tracker.require_minimum(
            round_cost(tracker, prompt, [root.path], [branching], step, branching, self.rollout),
            f"one expansion: branching={branching} candidate steps of up to {step} tokens"
            + (f", each rolled out {self.rollout} steps" if self.rollout else "")
            + ", scored",
        )
        per_depth: Counter[int] = Counter()  # candidates generated at each depth
        closed_by: Counter[str] = Counter()
        reported: list[Path] = []
        answered: list[Path] = []
        trace = [
            f"MCTS: {self.selection}, exploration {self.exploration}, {branching} candidates per "
            f"expansion, at most {width} per depth"
            + (f", rollouts of {self.rollout} steps" if self.rollout else "")
        ]
        stop = "no expandable leaf left"
        expansions = 0
        while True:
            leaf = self._select(root)
            if leaf is None:
                break
            depth = leaf.depth + 1
            room = min(branching, width - per_depth[depth])
            if leaf.depth >= self.max_rounds or room <= 0:
                closed_by["max_rounds" if leaf.depth >= self.max_rounds else "width"] += 1
                _close(leaf)
                continue

            def cost(k: int, leaf: _Node = leaf, depth: int = depth) -> Cost:
                charge = max(0, per_depth[depth] + k - tracker.compute.samples)
                return round_cost(tracker, prompt, [leaf.path], [k], step, charge, self.rollout)

            k = tracker.largest(cost, room)
            if k == 0:
                closed_by["budget"] += 1
                _close(leaf)
                continue
            charge = max(0, per_depth[depth] + k - tracker.compute.samples)
            visits, q = leaf.visits, leaf.q
            expansion_seed = derive_seed(seed, "expand", expansions)
            children: list[_Node] = []
            try:
                children = self._expand(tracker, prompt, leaf, k, charge, expansion_seed)
                self._evaluate(tracker, prompt, children, expansion_seed)
            except BudgetExhausted:  # only when a backend needs more tokens than the plan assumed
                reported.extend(c.path for c in children)
                stop = "budget spent mid-expansion"
                break
            expansions += 1
            per_depth[depth] += k
            leaf.children = children
            best = self._backup(leaf, children)
            reported.extend(c.path for c in children)
            answered.extend(c.path for c in children if c.path.status == "answered")
            if all(c.closed for c in children):
                _close(leaf)
            n_answered = sum(c.path.status == "answered" for c in children)
            n_dead = sum(c.path.status == "dead" for c in children)
            trace.append(
                f"expansion {expansions}: depth {leaf.depth} path (visits {visits}, "
                f"Q {q:.3f}) -> {k} candidates, {len(children)} distinct; {n_answered} answered, "
                f"{n_dead} dead; best {best:.3f}"
            )
        if closed_by:
            stop += " (closed: " + ", ".join(f"{n} by {why}" for why, n in sorted(closed_by.items())) + ")"
        trace.append(f"stopped: {stop}")
        visited = self._most_visited(root)
        if visited is not root:
            trace.append(
                f"most-visited path: depth {visited.depth}, {visited.visits} visits, Q {visited.q:.3f}, "
                f"{visited.path.status}"
            )
        if not answered:
            open_paths = [n for n in self._nodes(root) if n.path.status == "open" and n is not root]
            if open_paths:
                start = visited if visited.path.status == "open" and visited is not root else None
                if start is None:
                    start = max(open_paths, key=lambda n: (n.q, n.visits))
                done = complete_greedily(tracker, prompt, start.path, self, derive_seed(seed, "complete"))
                if done is not None:
                    reported.append(done)
                    answered.extend([done] if done.status == "answered" else [])
                    trace.append(f"completed the most-visited open path greedily: answer {done.answer}")
        answer = pick_by_score([p.candidate() for p in answered], self.weighted)
        return StrategyResult(
            answer=answer, candidates=[p.candidate() for p in reported], compute=tracker.compute, trace=trace
        )

    @staticmethod
    def _most_visited(root: _Node) -> _Node:
        """Down from the root along the most-visited live child (ties: the higher Q, then the first)."""
        node = root
        while True:
            live = [c for c in node.children if c.path.status != "dead"]
            if not live:
                return node
            node = max(live, key=lambda c: (c.visits, c.q))

    @staticmethod
    def _nodes(root: _Node) -> list[_Node]:
        out, stack = [], [root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out
