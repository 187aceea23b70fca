"""Generation with the embedded policy: batched sampling over a shared, pre-allocated KV cache.

Each distinct prompt is run through the model once (prefill); its keys and values are then copied
into the rows of its ``n`` samples, so ``n`` samples cost one prompt pass plus ``n`` decodes.
Finished rows are dropped from the batch as they finish, so a batch costs what its live rows do.

With a **prefix cache** (``prefix_cache_mb > 0``) the keys and values of every prompt and every
sample are kept (:mod:`ponder.backends.prefix_cache`, least recently used dropped past the cap),
and a later prompt that starts with a stored sequence computes only the rest: a tree search that
continues ``prompt + path`` each round prefills one token per path instead of the whole path.
Each thread has its own cache (a strategy run stays in one thread, and concurrent runs must not
disturb each other), emptied when a run starts (``reset_prefix_cache``).
``GenerationUsage.prompt_tokens`` and ``Completion.cached_prompt_tokens`` say what was computed and
what was reused. Reused keys and values equal recomputed ones up to float rounding.

Sampling is **prefix-stable**: sample ``s`` of prompt ``p`` draws its tokens by inverse-CDF from its
own stream of uniforms, seeded by ``(seed, p, s)`` alone, so a call for ``n`` samples returns exactly
the first ``n`` of a call for more (up to float rounding of batched matmuls, which can move a token
only when a uniform lands within ~1e-7 of a boundary). The evaluation harness relies on it to serve
every budget of majority / best-of-N from one pool of samples.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from ponder.backends.base import Completion, GenerationUsage, SamplingParams
from ponder.backends.prefix_cache import PrefixCache
from ponder.errors import ConfigError, ContextLengthError
from ponder.tasks.arithmetic import STEP_DELIMITER
from ponder.training.model import KVCache, TinyTransformer, load_model
from ponder.training.tokenizer import CharTokenizer

_FINISH = ("length", "eos", "stop")
# Prefix cache of the default generator (ponder.api): about 16k tokens of the shipped policy.
DEFAULT_PREFIX_CACHE_MB = 64.0


def _validate(params: SamplingParams) -> None:
    if params.n < 1:
        raise ConfigError(f"n must be at least 1, got {params.n}")
    if params.temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {params.max_new_tokens}")


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample one token per row from ``logits`` (greedy when temperature is 0).

    With ``uniforms`` (one number in [0, 1) per row) the draw is by inverse CDF, so a row's token
    depends on its own uniform only, not on the other rows of the batch; otherwise ``generator``
    drives ``torch.multinomial``.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = cumulative - sorted_probs >= top_p
        probs = sorted_probs.masked_fill(drop, 0.0)
    if uniforms is None:
        choice = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        cdf = probs.cumsum(dim=-1)
        target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
        choice = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
        # Rounding can (very rarely) land past the last token with mass: take the likeliest instead.
        has_mass = probs.gather(-1, choice[:, None]).squeeze(-1) > 0
        choice = torch.where(has_mass, choice, probs.argmax(dim=-1))
    return choice if order is None else order.gather(-1, choice[:, None]).squeeze(-1)


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``x``."""
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def row_uniforms(seed: int, n_prompts: int, n: int, length: int) -> torch.Tensor:
    """``[n_prompts * n, length]`` uniforms; row ``p * n + s`` is seeded by ``(seed, p, s)`` only."""
    out = torch.empty((n_prompts * n, length))
    gen = torch.Generator()
    for p in range(n_prompts):
        for s in range(n):
            gen.manual_seed(_mix64(_mix64(_mix64(seed) ^ p) ^ (s + 0x9E3779B97F4A7C15)) >> 1)
            out[p * n + s] = torch.rand(length, generator=gen)
    return out


class EmbeddedGenerator:
    """The embedded policy as a :class:`~ponder.backends.base.Generator`."""

    def __init__(
        self, model: TinyTransformer, tokenizer: CharTokenizer | None = None, prefix_cache_mb: float = 0.0
    ) -> None:
        if model.config.head != "lm":
            raise ConfigError("EmbeddedGenerator needs a policy model (head='lm'), got a reward model")
        if not prefix_cache_mb >= 0:
            raise ConfigError(f"prefix_cache_mb must be >= 0, got {prefix_cache_mb!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer or CharTokenizer()
        self.step_id = self.tokenizer.token_of(STEP_DELIMITER)
        self.last_usage = GenerationUsage()
        self.name = "embedded"
        config = model.config
        # Keys + values of one token over all layers.
        per_token = 2 * config.n_layer * config.d_model * model.tok_emb.weight.element_size()
        self._prefix_bytes = int(prefix_cache_mb * 2**20)
        self._kv_bytes_per_token = per_token
        self._local = threading.local()

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """This thread's prefix cache (None when disabled)."""
        if not self._prefix_bytes:
            return None
        cache = getattr(self._local, "prefix_cache", None)
        if cache is None:
            cache = self._local.prefix_cache = PrefixCache(self._prefix_bytes, self._kv_bytes_per_token)
        return cache

    def reset_prefix_cache(self) -> None:
        """Forget this thread's stored prefixes (a strategy run starts with this, so that what it
        computes does not depend on earlier runs)."""
        if self._prefix_bytes:
            self._local.prefix_cache = None

    # Sample s of a prompt does not depend on n (see the module docstring).
    prefix_stable = True

    @classmethod
    def load(cls, path: str | Path | None = None, prefix_cache_mb: float = 0.0) -> EmbeddedGenerator:
        """The shipped policy, or the one saved at ``path``."""
        from ponder.training.weights import policy_path

        model, _ = load_model(path or policy_path())
        return cls(model, prefix_cache_mb=prefix_cache_mb)

    @property
    def num_params(self) -> int:
        return self.model.num_params()

    @property
    def context_length(self) -> int:
        return self.model.config.max_seq_len

    def count_prompt_tokens(self, prompt: str) -> int:
        """Tokens :meth:`generate` runs ``prompt`` through (``<bos>`` included), for budgets."""
        return len(self.tokenizer.encode(prompt, bos=True))

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        if not prompts:
            raise ConfigError("no prompts given")
        encoded = [self.tokenizer.encode(p, bos=True) for p in prompts]
        limit = self.context_length - 1
        for i, ids in enumerate(encoded):
            if len(ids) > limit:
                raise ContextLengthError(
                    f"prompt {i} is {len(ids)} tokens long; the embedded model's context is "
                    f"{self.context_length} tokens and generation needs at least one more"
                )
        return encoded

    def _encode_stops(self, stop: tuple[str, ...] | list[str]) -> list[list[int]]:
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise ConfigError(f"stop must be a sequence of non-empty strings, got {stop!r}")
        return [self.tokenizer.encode(s) for s in stop]

    @staticmethod
    def _stop_hits(
        stop_ids: list[list[int]],
        emit: torch.Tensor,
        tokens: torch.Tensor,
        live: torch.Tensor,
        tok_buf: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Cache rows whose emitted text now ends with a stop string."""
        hit = torch.zeros_like(emit)
        last = torch.tensor(sorted({s[-1] for s in stop_ids}))
        for idx in (emit & torch.isin(tokens, last)).nonzero().squeeze(-1).tolist():
            r = int(live[idx])
            emitted = int(lengths[r])
            for s in stop_ids:
                if emitted >= len(s) and tok_buf[r, emitted - len(s) : emitted].tolist() == s:
                    hit[idx] = True
                    break
        return hit

    @staticmethod
    def _store(store: PrefixCache, ids: list[int], cache: KVCache, row: int, slots: torch.Tensor) -> None:
        """Put ``ids`` in ``store``; ``slots[j]`` is where token j sits in ``cache`` row ``row``."""

        def source(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
            at = slots[start:end]
            return cache.k[:, row].index_select(2, at), cache.v[:, row].index_select(2, at)

        store.insert(ids, source)
        if store.tokens > store.max_tokens:
            # Within a call too, so that a big batch never holds much more than the cap; down to
            # 90% so that the next rows do not evict one at a time.
            store.evict(store.max_tokens * 9 // 10)

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams | None = None) -> list[list[Completion]]:
        params = params or SamplingParams()
        _validate(params)
        encoded = self.encode_prompts(prompts)
        stop_ids = self._encode_stops(params.stop)
        n_prompts, n = len(encoded), params.n
        prompt_len = max(len(ids) for ids in encoded)
        max_new = min(params.max_new_tokens, self.context_length - prompt_len)

        # What the prefix cache holds of each prompt: all of it but the last token at most, which
        # is run to get the first new token's logits.
        store = self.prefix_cache
        hits = [store.match(row, limit=len(row) - 1) if store is not None else None for row in encoded]
        cached = [h.length if h is not None else 0 for h in hits]
        fresh = [len(row) - c for row, c in zip(encoded, cached)]
        c_len, u_len = max(cached), max(fresh)
        width = c_len + u_len
        # Prefill every distinct prompt once. Cache slots [0, c_len) hold the reused prefixes
        # (right-aligned), [c_len, width) the tokens computed now (left-padded); positions and the
        # mask make each row one contiguous sequence. Without reuse this is plain left padding.
        dtype = self.model.tok_emb.weight.dtype
        prompt_cache = KVCache(self.model.config, n_prompts, width, dtype)
        valid = torch.zeros((n_prompts, width), dtype=torch.bool)
        ids = torch.full((n_prompts, u_len), self.tokenizer.pad_id, dtype=torch.long)
        positions = torch.zeros((n_prompts, u_len), dtype=torch.long)
        for i, (row, hit) in enumerate(zip(encoded, hits)):
            c, u = cached[i], fresh[i]
            if hit is not None and c:
                k, v = hit.kv()
                prompt_cache.k[:, i, :, c_len - c : c_len] = k
                prompt_cache.v[:, i, :, c_len - c : c_len] = v
                valid[i, c_len - c : c_len] = True
            ids[i, u_len - u :] = torch.tensor(row[c:])
            positions[i, u_len - u :] = torch.arange(c, c + u)
            valid[i, width - u :] = True
        prompt_cache.length = c_len
        causal = torch.ones(u_len, u_len, dtype=torch.bool).tril()
        # Padding queries attend to themselves so no softmax row is empty.
        mask = causal & (valid[:, None, None, c_len:] | torch.eye(u_len, dtype=torch.bool))
        if c_len:
            mask = torch.cat((valid[:, None, None, :c_len].expand(-1, 1, u_len, -1), mask), dim=-1)
        logits = self.model(ids, positions, mask, prompt_cache)[:, -1]
        usage = GenerationUsage(
            prompt_tokens=sum(fresh), forward_tokens=n_prompts * u_len, cached_prompt_tokens=sum(cached)
        )
        # Each prompt's cache slots, in token order: for storing it, and its samples, for reuse.
        slots = [
            torch.cat((torch.arange(c_len - c, c_len), torch.arange(width - u, width)))
            for c, u in zip(cached, fresh)
        ]
        if store is not None:
            for i, row in enumerate(encoded):
                self._store(store, row, prompt_cache, i, slots[i])

        # Give each sample its own copy of its prompt's cache.
        rows = torch.arange(n_prompts).repeat_interleave(n)
        cache = prompt_cache.expand_rows(rows, width + max_new)
        del prompt_cache
        logits = logits[rows]
        key_valid = torch.zeros((len(rows), width + max_new), dtype=torch.bool)
        key_valid[:, :width] = valid[rows]
        next_pos = torch.tensor([len(encoded[int(r)]) for r in rows])

        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)))
        # Drawn for the whole context whatever max_new is, so a row's stream never depends on it.
        uniforms = row_uniforms(seed, n_prompts, n, self.context_length) if params.temperature > 0 else None
        n_rows = len(rows)
        tok_buf = torch.zeros((n_rows, max_new), dtype=torch.long)
        lp_buf = torch.zeros((n_rows, max_new))
        lengths = torch.zeros(n_rows, dtype=torch.long)
        finish_code = torch.zeros(n_rows, dtype=torch.long)  # index into _FINISH
        live = torch.arange(n_rows)  # output row of each cache row
        running = torch.ones(n_rows, dtype=torch.bool)  # cache rows still generating
        fed = torch.zeros(n_rows, dtype=torch.long)  # decode steps each output row took part in
        banned = [self.tokenizer.pad_id, self.tokenizer.bos_id]

        def store_rows(cache_rows: list[int]) -> None:
            # A row's keys/values are valid for its prompt and the emitted tokens it was fed back
            # (not the last one of a row cut at max_new or at a stop, nor tokens after its end).
            for idx in cache_rows:
                r = int(live[idx])
                kept = min(int(fed[r]), int(lengths[r]))
                seq_slots = torch.cat((slots[r // n], torch.arange(width, width + kept)))
                self._store(store, encoded[r // n] + tok_buf[r, :kept].tolist(), cache, idx, seq_slots)

        for t in range(max_new):
            logits[:, banned] = float("-inf")
            u = uniforms[live, t] if uniforms is not None else None
            tokens = sample_tokens(logits, params.temperature, params.top_p, uniforms=u)
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
            is_eos = tokens == self.tokenizer.eos_id
            emit = running & ~is_eos
            out_rows = live[emit]
            tok_buf[out_rows, t] = tokens[emit]
            lp_buf[out_rows, t] = logprobs[emit]
            lengths[out_rows] += 1
            done = running & is_eos
            finish_code[live[done]] = 1
            if params.stop_at_step:
                stop = emit & (tokens == self.step_id)
                finish_code[live[stop]] = 2
                done |= stop
            if stop_ids:
                stop = self._stop_hits(stop_ids, emit, tokens, live, tok_buf, lengths)
                finish_code[live[stop]] = 2
                done |= stop
            running &= ~done
            n_running = int(running.sum())
            if n_running == 0 or t + 1 >= max_new:
                break
            if n_running <= 0.75 * len(running):
                # Drop finished rows in bulk: copying the cache per finished row would cost more
                # than computing a few dead rows.
                keep = running.nonzero().squeeze(-1)
                if store is not None:
                    store_rows((~running).nonzero().squeeze(-1).tolist())
                cache.select_rows(keep)
                live, tokens, key_valid = live[keep], tokens[keep], key_valid[keep]
                next_pos, running = next_pos[keep], running[keep]
            pos = cache.length
            key_valid[:, pos] = True
            step_mask = key_valid[:, None, None, : pos + 1]
            logits = self.model(tokens[:, None], next_pos[:, None], step_mask, cache)[:, -1]
            usage.forward_tokens += len(live)
            fed[live] += 1
            next_pos = next_pos + 1

        if store is not None:
            store_rows(list(range(len(live))))
            store.evict()
        self.last_usage = usage
        usage.completion_tokens = int(lengths.sum())
        out_ids = [tok_buf[r, : lengths[r]].tolist() for r in range(n_rows)]
        out_lp = [lp_buf[r, : lengths[r]].tolist() for r in range(n_rows)]
        finish = [_FINISH[c] for c in finish_code.tolist()]
        results: list[list[Completion]] = []
        for p in range(n_prompts):
            group = []
            for s in range(n):
                r = p * n + s
                group.append(
                    Completion(
                        text=self.tokenizer.decode(out_ids[r]),
                        token_ids=out_ids[r],
                        logprobs=out_lp[r],
                        finish_reason=finish[r],
                        prompt_tokens=len(encoded[p]),
                        cached_prompt_tokens=cached[p],
                    )
                )
            results.append(group)
        return results
