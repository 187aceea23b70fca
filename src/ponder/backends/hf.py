"""Generation with a transformers causal LM from a local directory (``hf:/path``).

Prompts run left-padded in one batch. Each distinct prompt is prefilled once and its KV cache is
repeated for its ``n`` samples (all but its last token: ``generate`` needs one new position to
start from), so ``n`` samples cost one prompt pass plus ``n`` decodes, as with the embedded model.
Chat models (a tokenizer with a chat template) get each question as a user turn and continue the
assistant turn; ``chat=False`` feeds prompts as plain text. Step-wise search stops each sample at
the step delimiter (and ``SamplingParams.stop`` at its strings) with ``stop_strings``, and cuts the
text just after it. ``SamplingParams.top_logprobs`` returns the most likely tokens per position.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ponder.backends.base import Completion, GenerationUsage, SamplingParams
from ponder.backends.common import (
    CHAT_BOUNDARY_TOKENS,
    DEFAULT_STEP_DELIMITER,
    END_OF_TURN_TOKENS,
    ContinuationGenerator,
    checked_call,
    cut_at_stop,
    stop_strings,
)
from ponder.errors import ConfigError, ContextLengthError, WeightsError


class HFGenerator(ContinuationGenerator):
    """A :class:`~ponder.backends.base.Generator` on a transformers model and tokenizer."""

    prefix_stable = False  # transformers' sampler draws for the whole batch at once

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        chat: bool | None = None,
        step_delimiter: str = DEFAULT_STEP_DELIMITER,
        share_prompt_cache: bool = True,
        device: str | None = None,
        name: str = "hf",
    ) -> None:
        if not step_delimiter:
            raise ConfigError("step_delimiter must not be empty")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat and not has_template:
            raise ConfigError(f"chat=True but the tokenizer of {name} has no chat template")
        import torch

        if device is not None:
            try:
                model = model.to(torch.device(device))
            except (RuntimeError, AssertionError, ValueError) as exc:
                raise ConfigError(f"hf backend: cannot use device {device!r}: {exc}") from exc
        self.model = model.eval()
        self.device = next(model.parameters()).device
        # One call at a time: generate() seeds torch's global RNG, and a server may call from threads.
        self._lock = threading.Lock()
        self.tokenizer = tokenizer
        self.chat = has_template if chat is None else chat
        self.step_delimiter = step_delimiter
        self.share_prompt_cache = share_prompt_cache
        self.name = name
        self.last_usage = GenerationUsage()
        if tokenizer.pad_token_id is None:
            # Left padding needs a pad id; its positions are masked, so which token does not matter.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
        tokenizer.padding_side = "left"
        self.stop_ids = self._stop_ids()
        config = model.config
        self.context_length = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )
        embeddings = model.get_input_embeddings().weight.numel()
        self._num_params = sum(p.numel() for p in model.parameters()) - embeddings

    @classmethod
    def load(cls, path: str | Path, *, dtype: str = "float32", **options: Any) -> HFGenerator:
        """The model and tokenizer saved in the directory ``path`` (nothing is downloaded)."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ConfigError(f"hf backend: {path} is not a directory (expected a saved transformers model)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"hf backend: {path} has no config.json (not a saved transformers model)")
        import torch

        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ConfigError(f"hf backend: unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError("the hf backend needs transformers: pip install 'ponder[hf]'") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"hf backend: cannot load a tokenizer from {path}: {exc}") from exc
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise WeightsError(f"hf backend: cannot load a causal LM from {path}: {exc}") from exc
        return cls(model, tokenizer, name=f"hf:{path}", **options)

    # --- the Generator protocol ------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        return self._num_params

    def render(self, question: str, response: str = "") -> str:
        """The text the model reads: the question as a chat turn (chat models), then the response."""
        if not self.chat:
            return question + response
        head = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        return head + response

    def encode(self, text: str) -> list[int]:
        # A chat template writes its own special tokens (BOS among them); plain text gets the
        # tokenizer's usual ones.
        return list(self.tokenizer(text, add_special_tokens=not self.chat).input_ids)

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(self.encode(self.render(prompt))) + (CHAT_BOUNDARY_TOKENS if self.chat else 0)

    def generate_continuations(
        self, questions: list[str], responses: list[str], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        import torch

        params = checked_call(questions, responses, params)
        encoded = [self.encode(self.render(q, r)) for q, r in zip(questions, responses)]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ConfigError(f"prompt {i} is empty after tokenization")
            if len(ids) >= self.context_length:
                raise ContextLengthError(
                    f"prompt {i} is {len(ids)} tokens long; {self.name}'s context is {self.context_length} "
                    "tokens and generation needs at least one more"
                )
        prompt_len = max(len(ids) for ids in encoded)
        max_new = min(params.max_new_tokens, self.context_length - prompt_len)
        if params.temperature == 0 and params.n > 1:
            # Greedy samples are all the same: decode once, hand out copies.
            one = self.generate_continuations(questions, responses, replace(params, n=1))
            return [[replace(group[0]) for _ in range(params.n)] for group in one]
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with self._lock, torch.inference_mode(), torch.random.fork_rng(devices=devices):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            sequences, logits = self._run(encoded, params, max_new)
            sequences = sequences.cpu()
            logits = tuple(step.float().cpu() for step in logits) if logits else logits
        return self._completions(encoded, sequences, logits, prompt_len, params)

    # --- internals -------------------------------------------------------------------------------

    def _stop_ids(self) -> list[int]:
        ids = set()
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ids.add(int(eos))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if value is not None:
                ids.add(int(value))
        if self.chat:
            vocab = self.tokenizer.get_vocab()
            ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
        return sorted(ids)

    def _run(self, encoded: list[list[int]], params: SamplingParams, max_new: int) -> tuple[Any, Any]:
        import torch

        pad = self.tokenizer.pad_token_id
        n, prompt_len = params.n, max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), prompt_len), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), prompt_len), dtype=torch.long)
        for i, row in enumerate(encoded):
            ids[i, prompt_len - len(row) :] = torch.tensor(row)
            mask[i, prompt_len - len(row) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new,
            do_sample=params.temperature > 0,
            pad_token_id=pad,
            eos_token_id=self.stop_ids,
            output_logits=True,
            return_dict_in_generate=True,
        )
        # Only ponder's sampling parameters apply: a model's generation_config.json often sets its
        # own (top_k, repetition_penalty, ...), which would otherwise be merged in.
        kwargs.update(repetition_penalty=1.0, no_repeat_ngram_size=0, min_p=None, typical_p=1.0)
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        stops = stop_strings(params, self.step_delimiter)
        if stops:
            kwargs.update(stop_strings=list(stops), tokenizer=self.tokenizer)
        usage = GenerationUsage(prompt_tokens=sum(len(r) for r in encoded))
        if n > 1 and prompt_len > 1 and self.share_prompt_cache:
            # Prefill each prompt once (all but its last token) and give every sample a copy.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            prefill = self.model(
                input_ids=ids[:, :-1],
                attention_mask=mask[:, :-1],
                position_ids=positions[:, :-1],
                use_cache=True,
            )
            cache = prefill.past_key_values
            cache.batch_repeat_interleave(n)
            out = self.model.generate(
                input_ids=ids.repeat_interleave(n, 0),
                attention_mask=mask.repeat_interleave(n, 0),
                past_key_values=cache,
                **kwargs,
            )
            usage.forward_tokens = len(encoded) * (prompt_len - 1)
        else:
            out = self.model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n, **kwargs)
            usage.forward_tokens = len(encoded) * n * prompt_len
        steps = out.sequences.shape[1] - prompt_len
        usage.forward_tokens += len(encoded) * n * steps
        self.last_usage = usage
        return out.sequences[:, prompt_len:], out.logits

    def _completions(
        self, encoded: list[list[int]], sequences: Any, logits: Any, prompt_len: int, params: SamplingParams
    ) -> list[list[Completion]]:
        import torch

        stops = set(self.stop_ids)
        stop_texts = stop_strings(params, self.step_delimiter)
        pad = self.tokenizer.pad_token_id
        top: list[list[dict[str, float]]] | None = None
        if logits:
            # The model's own log-probabilities (raw logits, before temperature and top-p).
            steps = torch.stack([step.float() for step in logits], dim=1)  # rows x steps x vocab
            all_lp = torch.log_softmax(steps, dim=-1)
            token_lp = all_lp.gather(-1, sequences[:, : steps.shape[1], None]).squeeze(-1).tolist()
            if params.top_logprobs:
                values, ids = all_lp.topk(min(params.top_logprobs, all_lp.shape[-1]), dim=-1)
                top = [
                    [self._top_entry(i_row, v_row) for i_row, v_row in zip(ids_r.tolist(), vals_r.tolist())]
                    for ids_r, vals_r in zip(ids, values)
                ]
        else:
            token_lp = [[] for _ in range(sequences.shape[0])]
        rows = sequences.tolist()
        results: list[list[Completion]] = []
        completion_total = 0
        for p, prompt_ids in enumerate(encoded):
            group = []
            for s in range(params.n):
                r = p * params.n + s
                row = rows[r]
                finish, end = "length", len(row)
                for t, tok in enumerate(row):
                    if tok in stops:
                        finish, end = "eos", t
                        break
                tokens, lps = row[:end], token_lp[r][:end]
                if finish == "length" and pad is not None and pad not in stops:
                    # A row that stopped at the step string is padded after it.
                    while tokens and tokens[-1] == pad and len(tokens) < len(row):
                        tokens.pop()
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                if stop_texts:
                    cut_text, met = cut_at_stop(text, stop_texts)
                    if met:
                        keep = self._tokens_through(tokens, len(cut_text))
                        text, tokens, lps, finish = cut_text, tokens[:keep], lps[:keep], "stop"
                completion_total += len(tokens)
                group.append(
                    Completion(
                        text=text,
                        token_ids=tokens,
                        logprobs=lps,
                        finish_reason=finish,
                        prompt_tokens=len(prompt_ids),
                        top_logprobs=top[r][: len(tokens)] if top is not None else None,
                    )
                )
            results.append(group)
        self.last_usage.completion_tokens = completion_total
        return results

    def _top_entry(self, ids: list[int], values: list[float]) -> dict[str, float]:
        entry: dict[str, float] = {}
        for i, v in zip(ids, values):
            entry.setdefault(self.tokenizer.decode([i]), v)  # two ids may read alike: keep the likelier
        return entry

    def _tokens_through(self, tokens: list[int], chars: int) -> int:
        """The fewest leading tokens whose text holds the first ``chars`` characters."""
        for k in range(1, len(tokens) + 1):
            if len(self.tokenizer.decode(tokens[:k], skip_special_tokens=True)) >= chars:
                return k
        return len(tokens)
