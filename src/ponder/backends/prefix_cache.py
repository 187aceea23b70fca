"""A radix tree of token prefixes and their keys/values, so that a prompt's cached prefix is not
computed again (tree search re-reads ``prompt + path`` every round; most of it ran before).

Each edge holds a run of token ids and the keys and values the model computed for them, one tensor
pair per edge ``(layers, heads, tokens, head_dim)``: a prefix shared by many paths (the question, an
early step) is stored once. :meth:`PrefixCache.match` finds the longest stored prefix of a token
sequence; :meth:`PrefixCache.insert` adds what a sequence has beyond its stored prefix. Stored
tokens are capped (``max_bytes``); past the cap the least recently used leaves go first.

Keys and values depend only on the tokens before them (causal attention, absolute rotary
positions), so a stored prefix serves any sequence that starts with it. Reused values equal
recomputed ones up to float rounding (a row computed in another batch shape).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Returns keys and values for tokens [start, end) of the sequence being inserted.
KVSource = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(eq=False)
class _Node:
    tokens: list[int]
    k: torch.Tensor | None  # (layers, heads, len(tokens), head_dim); None at the root
    v: torch.Tensor | None
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    tick: int = 0


@dataclass
class PrefixMatch:
    """The longest stored prefix of a sequence: ``length`` tokens, stored along ``segments``."""

    length: int
    segments: list[tuple[_Node, int]]  # (edge, tokens of it used)

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the matched prefix, ``(layers, heads, length, head_dim)``."""
        ks = [node.k[:, :, :used] for node, used in self.segments]  # type: ignore[index]
        vs = [node.v[:, :, :used] for node, used in self.segments]  # type: ignore[index]
        return torch.cat(ks, dim=2), torch.cat(vs, dim=2)


def _common(a: list[int], b: list[int], start: int) -> int:
    """Length of the common prefix of ``a`` and ``b[start:]``."""
    n = min(len(a), len(b) - start)
    i = 0
    while i < n and a[i] == b[start + i]:
        i += 1
    return i


class PrefixCache:
    """Token prefixes -> keys/values, at most ``max_bytes`` of them, least recently used evicted."""

    def __init__(self, max_bytes: int, bytes_per_token: int) -> None:
        self.max_tokens = max(0, max_bytes // max(1, bytes_per_token))
        self.bytes_per_token = bytes_per_token
        self.root = _Node([], None, None, parent=None)
        self.tokens = 0  # stored tokens, over all edges
        self._clock = itertools.count(1)

    @property
    def nbytes(self) -> int:
        return self.tokens * self.bytes_per_token

    def clear(self) -> None:
        self.root = _Node([], None, None, parent=None)
        self.tokens = 0

    def match(self, ids: list[int], limit: int | None = None) -> PrefixMatch:
        """The longest stored prefix of ``ids`` (at most ``limit`` tokens), marked as just used."""
        limit = len(ids) if limit is None else min(limit, len(ids))
        tick = next(self._clock)
        node, i, segments = self.root, 0, []
        while i < limit:
            child = node.children.get(ids[i])
            if child is None:
                break
            used = min(_common(child.tokens, ids, i), limit - i)
            child.tick = tick
            segments.append((child, used))
            i += used
            if used < len(child.tokens):
                break
            node = child
        return PrefixMatch(i, segments)

    def insert(self, ids: list[int], source: KVSource) -> int:
        """Store ``ids``; ``source`` gives keys/values of the tokens not stored yet. Returns how many
        tokens were added."""
        tick = next(self._clock)
        node, i = self.root, 0
        while i < len(ids):
            child = node.children.get(ids[i])
            if child is None:
                k, v = source(i, len(ids))
                # Own copies (a view would keep a whole batch's cache alive); fresh tensors as they are.
                k = k if k._base is None else k.clone()
                v = v if v._base is None else v.clone()
                leaf = _Node(list(ids[i:]), k, v, node, tick=tick)
                node.children[ids[i]] = leaf
                self.tokens += len(leaf.tokens)
                return len(leaf.tokens)
            used = _common(child.tokens, ids, i)
            child.tick = tick
            if used < len(child.tokens):
                if i + used == len(ids):
                    return 0  # ids is a prefix of what is stored
                child = self._split(child, used)
            node, i = child, i + used
        return 0

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s edge after ``at`` tokens; returns the new upper part (its parent's child)."""
        assert node.parent is not None and node.k is not None and node.v is not None
        k, v = node.k[:, :, :at].clone(), node.v[:, :, :at].clone()
        upper = _Node(node.tokens[:at], k, v, node.parent, tick=node.tick)
        node.parent.children[node.tokens[0]] = upper
        # Clones, so that evicting one part frees its memory.
        node.tokens = node.tokens[at:]
        node.k = node.k[:, :, at:].clone()
        node.v = node.v[:, :, at:].clone()
        node.parent = upper
        upper.children[node.tokens[0]] = node
        return upper

    def evict(self, target: int | None = None) -> int:
        """Drop least recently used leaves until at most ``target`` (default ``max_tokens``) tokens
        are stored; returns how many tokens went."""
        target = self.max_tokens if target is None else target
        if self.tokens <= target:
            return 0
        before = self.tokens
        order = itertools.count()
        heap = [(n.tick, next(order), n) for n in self._leaves()]
        heapq.heapify(heap)
        while self.tokens > target and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.tokens[0]]
            self.tokens -= len(leaf.tokens)
            if parent is not self.root and not parent.children:
                heapq.heappush(heap, (parent.tick, next(order), parent))
        return before - self.tokens

    def _leaves(self) -> list[_Node]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            elif node is not self.root:
                out.append(node)
        return out

    def __len__(self) -> int:
        """Stored sequences (leaves)."""
        return len(self._leaves())
