"""Generation with the embedded policy: batched sampling over a shared, pre-allocated KV cache.

Each distinct prompt is run through the model once (prefill); its keys and values are then copied
into the rows of its ``n`` samples, so ``n`` samples cost one prompt pass plus ``n`` decodes.
Finished rows are dropped from the batch as they finish, so a batch costs what its live rows do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ponder.backends.base import Completion, GenerationUsage, SamplingParams
from ponder.errors import ConfigError, ContextLengthError
from ponder.tasks.arithmetic import STEP_DELIMITER
from ponder.training.model import KVCache, TinyTransformer, load_model
from ponder.training.tokenizer import CharTokenizer

_FINISH = ("length", "eos", "stop")


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
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """Sample one token per row from ``logits`` (greedy when temperature is 0)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = cumulative - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class EmbeddedGenerator:
    """The embedded policy as a :class:`~ponder.backends.base.Generator`."""

    def __init__(self, model: TinyTransformer, tokenizer: CharTokenizer | None = None) -> None:
        if model.config.head != "lm":
            raise ConfigError("EmbeddedGenerator needs a policy model (head='lm'), got a reward model")
        self.model = model.eval()
        self.tokenizer = tokenizer or CharTokenizer()
        self.step_id = self.tokenizer.token_of(STEP_DELIMITER)
        self.last_usage = GenerationUsage()
        self.name = "embedded"

    @classmethod
    def load(cls, path: str | Path | None = None) -> EmbeddedGenerator:
        """The shipped policy, or the one saved at ``path``."""
        from ponder.training.weights import policy_path

        model, _ = load_model(path or policy_path())
        return cls(model)

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

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams | None = None) -> list[list[Completion]]:
        params = params or SamplingParams()
        _validate(params)
        encoded = self.encode_prompts(prompts)
        n_prompts, n = len(encoded), params.n
        prompt_len = max(len(ids) for ids in encoded)
        max_new = min(params.max_new_tokens, self.context_length - prompt_len)

        # Prefill every distinct prompt once, left-padded to a common length.
        ids = torch.full((n_prompts, prompt_len), self.tokenizer.pad_id, dtype=torch.long)
        valid = torch.zeros((n_prompts, prompt_len), dtype=torch.bool)
        for i, row in enumerate(encoded):
            ids[i, prompt_len - len(row) :] = torch.tensor(row)
            valid[i, prompt_len - len(row) :] = True
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
        # Padding queries attend to themselves so no softmax row is empty.
        mask = causal & (valid[:, None, None, :] | torch.eye(prompt_len, dtype=torch.bool))
        dtype = self.model.tok_emb.weight.dtype
        prompt_cache = KVCache(self.model.config, n_prompts, prompt_len, dtype)
        logits = self.model(ids, positions, mask, prompt_cache)[:, -1]
        usage = GenerationUsage(
            prompt_tokens=sum(len(r) for r in encoded), forward_tokens=n_prompts * prompt_len
        )

        # Give each sample its own copy of its prompt's cache.
        rows = torch.arange(n_prompts).repeat_interleave(n)
        cache = prompt_cache.expand_rows(rows, prompt_len + max_new)
        del prompt_cache
        logits = logits[rows]
        key_valid = torch.zeros((len(rows), prompt_len + max_new), dtype=torch.bool)
        key_valid[:, :prompt_len] = valid[rows]
        next_pos = torch.tensor([len(encoded[int(r)]) for r in rows])

        gen = torch.Generator()
        gen.manual_seed(params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,))))
        n_rows = len(rows)
        tok_buf = torch.zeros((n_rows, max_new), dtype=torch.long)
        lp_buf = torch.zeros((n_rows, max_new))
        lengths = torch.zeros(n_rows, dtype=torch.long)
        finish_code = torch.zeros(n_rows, dtype=torch.long)  # index into _FINISH
        live = torch.arange(n_rows)  # output row of each cache row
        running = torch.ones(n_rows, dtype=torch.bool)  # cache rows still generating
        banned = [self.tokenizer.pad_id, self.tokenizer.bos_id]

        for t in range(max_new):
            logits[:, banned] = float("-inf")
            tokens = sample_tokens(logits, params.temperature, params.top_p, gen)
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
            running &= ~done
            n_running = int(running.sum())
            if n_running == 0 or t + 1 >= max_new:
                break
            if n_running <= 0.75 * len(running):
                # Drop finished rows in bulk: copying the cache per finished row would cost more
                # than computing a few dead rows.
                keep = running.nonzero().squeeze(-1)
                cache.select_rows(keep)
                live, tokens, key_valid = live[keep], tokens[keep], key_valid[keep]
                next_pos, running = next_pos[keep], running[keep]
            pos = cache.length
            key_valid[:, pos] = True
            step_mask = key_valid[:, None, None, : pos + 1]
            logits = self.model(tokens[:, None], next_pos[:, None], step_mask, cache)[:, -1]
            usage.forward_tokens += len(live)
            next_pos = next_pos + 1

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
                    )
                )
            results.append(group)
        return results
