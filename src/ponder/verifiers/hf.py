"""Hugging Face reward models as verifiers (``pip install 'ponder[hf]'``).

- :class:`ShepherdPRM`: a causal LM that scores each step by its next-token probabilities of
  "+" vs "-" at a step tag (Math-Shepherd). Score = P(+) / (P(+) + P(-)) at the tag.
- :class:`QwenPRM`: a token-classification head with two classes read at a separator token after
  each step (Qwen2.5-Math-PRM). Score = softmax class 1 at the separator.
- :class:`RLHFlowPRM`: a causal LM reading a chat whose user turns are the steps, each answered
  "+" (RLHFlow's Llama3.1-8B-PRM). Score = P(+) / (P(+) + P(-)) of the next token where the "+" is.
- :class:`SequenceORM`: a sequence-classification outcome reward model, one score per solution:
  sigmoid of its logit (one label) or softmax of the positive class (two or more labels). Its one
  score is both the only step score and the outcome, so every aggregation reads it.

The text each model reads is built by :mod:`ponder.verifiers.formats`. Batches are padded on the
right (real tokens of a causal model never see the padding), so a solution scores the same
alone or in any batch, and a solution's prefix gets the step scores the full solution has.

Budgets: ``tokens`` is the length of the encoded input (padding excluded), ``count_tokens``
encodes the same text, and FLOPs are 2 x non-embedding parameters x tokens (the input embedding
table is left out; an output head is counted, tied or not).

:func:`load_hf_verifier` checks the directory, its config and its tokenizer (and tells the step
format apart when none is given) before any weights are loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError, ContextLengthError, WeightsError
from ponder.verifiers.base import VerifierScore
from ponder.verifiers.formats import (
    QWEN_SEPARATOR,
    QWEN_SYSTEM,
    SHEPHERD_BAD,
    SHEPHERD_GOOD,
    SHEPHERD_TAG,
    question_text,
    qwen_messages,
    render_chatml,
    rlhflow_messages,
    shepherd_text,
    split_steps,
)

HF_FORMATS = ("shepherd", "qwen", "rlhflow", "orm")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.bin.index.json")


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # an optional extra
        raise ConfigError("Hugging Face verifiers need transformers: pip install 'ponder[hf]'") from exc
    return transformers


# --- checking a model directory before loading anything ----------------------------------------


def read_model_dir(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The directory and its ``config.json``; a ConfigError naming what is missing otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"model directory not found: {p}")
    if not p.is_dir():
        raise ConfigError(f"{p} is not a directory: a Hugging Face model is a directory with config.json")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ConfigError(f"no config.json in {p}: not a Hugging Face model directory")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {cfg}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg} is not a JSON object")
    if not any(next(p.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
        raise ConfigError(f"no weights (*.safetensors or pytorch_model*.bin) in {p}")
    return p, config


def load_tokenizer(path: Path) -> Any:
    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a broken tokenizer
        raise ConfigError(f"cannot load the tokenizer in {path}: {exc}") from exc


def _architectures(config: dict[str, Any]) -> list[str]:
    archs = config.get("architectures") or []
    return [a for a in archs if isinstance(a, str)]


def single_token_id(tokenizer: Any, text: str, context: str = "1 ") -> int | None:
    """The id of the one token ``text`` becomes after ``context``, or None when it is split
    or merged with its neighbours (read through the tokenizer's character offsets)."""
    full = context + text
    ids, offsets = _encode(tokenizer, full, add_special_tokens=False)
    if offsets is None:  # a slow tokenizer: fall back to encoding the text alone
        alone = tokenizer.encode(text, add_special_tokens=False)
        return alone[0] if len(alone) == 1 else None
    start, end = len(context), len(full)
    covering = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if len(covering) != 1:
        return None
    a, b = offsets[covering[0]]
    # The token may carry the space before it (SentencePiece "▁ки"), nothing else.
    if b != end or a < start - 1 or (a == start - 1 and full[a] != " "):
        return None
    return ids[covering[0]]


def _encode(tokenizer: Any, text: str, add_special_tokens: bool = True) -> tuple[list[int], list | None]:
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]), None


def detect_format(path: Path, config: dict[str, Any], tokenizer: Any) -> str:
    """Which step format the reward model in ``path`` uses: ``qwen``, ``shepherd`` or ``orm``."""
    archs = _architectures(config)
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "orm"
    vocab = tokenizer.get_vocab()
    if QWEN_SEPARATOR in vocab and any(
        "ProcessRewardModel" in a or a.endswith("ForTokenClassification") for a in archs
    ):
        return "qwen"
    if any(a.endswith("ForCausalLM") for a in archs) and single_token_id(tokenizer, SHEPHERD_TAG) is not None:
        return "shepherd"
    raise ConfigError(
        f"cannot tell the step format of the reward model in {path} (architectures {archs or 'not given'}; "
        f"looked for a sequence-classification model, a token-classification PRM with a "
        f"{QWEN_SEPARATOR!r} token, or a causal LM with a {SHEPHERD_TAG!r} step tag): name it with "
        "hf-prm+shepherd:, hf-prm+qwen: or hf-orm:"
    )


def non_embedding_params(model: Any) -> int:
    """Parameters less the input embedding table; a tied output head is counted (it computes)."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings()
    if emb is None:
        return total
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = out is not None and getattr(out, "weight", None) is emb.weight
    return total if tied else total - emb.weight.numel()


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device")
    return device


def torch_dtype(name: str) -> Any:
    import torch

    value = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ConfigError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
    return value


def _load_weights(loader: Callable[..., Any], path: Path, what: str, **kwargs: Any) -> Any:
    try:
        return loader(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise WeightsError(f"cannot load the {what} in {path}: {exc}") from exc


# --- the shared scoring loop --------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One (prompt, solution) pair ready for the model: token ids and where to read scores."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]  # step-score positions (PRM); empty for an ORM


class _HFVerifier:
    """Batching, padding, token counting and parameter counting; subclasses encode and read."""

    name = "hf"
    outcome_model = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        device: str | None = "cpu",
        step_delimiter: str = "\n",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"verifier batch_size must be >= 1, got {batch_size}")
        if not step_delimiter:
            raise ConfigError("the step delimiter must be a non-empty string")
        self.device = _pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.step_delimiter = step_delimiter
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._num_params = non_embedding_params(model)
        self._encode_cached = lru_cache(maxsize=4096)(self.encode)

    # --- the Verifier protocol -------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        return self._num_params

    @property
    def context_length(self) -> int | None:
        cfg = self.model.config
        return getattr(cfg, "max_position_embeddings", None)

    def count_tokens(self, prompt: str, solution: str) -> int:
        """Tokens :meth:`score` runs one pair through (its encoded input, padding excluded)."""
        return len(self._encode_cached(prompt, solution).ids)

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        import torch

        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        encoded = [self._encode_cached(p, s) for p, s in zip(prompts, solutions)]
        limit = self.context_length
        for i, enc in enumerate(encoded):
            if limit is not None and len(enc.ids) > limit:
                raise ContextLengthError(
                    f"solution {i} is {len(enc.ids)} tokens with its prompt; the verifier {self.name}'s "
                    f"context is {limit}"
                )
        out: list[VerifierScore | None] = [None] * len(encoded)
        # Empty solutions have nothing to score; the rest run longest first, in padded batches.
        todo = []
        for i, enc in enumerate(encoded):
            if self._has_work(enc):
                todo.append(i)
            else:
                out[i] = VerifierScore(step_scores=[], outcome=None, tokens=0)
        todo.sort(key=lambda i: -len(encoded[i].ids))
        with torch.inference_mode():
            for b in range(0, len(todo), self.batch_size):
                idxs = todo[b : b + self.batch_size]
                chunk = [encoded[i] for i in idxs]
                width = max(len(e.ids) for e in chunk)
                x = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, e in enumerate(chunk):
                    x[r, : len(e.ids)] = torch.tensor(e.ids)
                    mask[r, : len(e.ids)] = 1
                values = self.read(x.to(self.device), mask.to(self.device), chunk)
                for i, e, steps in zip(idxs, chunk, values):
                    outcome = steps[-1] if self.outcome_model else None
                    out[i] = VerifierScore(step_scores=steps, outcome=outcome, tokens=len(e.ids))
        return [s for s in out if s is not None]

    # --- what subclasses provide -----------------------------------------------------------------

    def encode(self, prompt: str, solution: str) -> Encoded:
        raise NotImplementedError

    def read(self, x: Any, mask: Any, chunk: list[Encoded]) -> list[list[float]]:
        """Step scores of each row of a padded batch."""
        raise NotImplementedError

    def _has_work(self, enc: Encoded) -> bool:
        return bool(enc.positions)

    def steps(self, solution: str) -> list[str]:
        return split_steps(solution, self.step_delimiter)


def shepherd_token_ids(tokenizer: Any, tag: str, good: str, bad: str) -> tuple[int, int, int]:
    """Token ids of the step tag and the good / bad labels; each must be one token."""
    ids = []
    for what, text in (("step tag", tag), ("good label", good), ("bad label", bad)):
        token = single_token_id(tokenizer, text)
        if token is None:
            raise ConfigError(f"the {what} {text!r} is not one token of the PRM's tokenizer")
        ids.append(token)
    if ids[1] == ids[2]:
        raise ConfigError(f"the good and bad labels {good!r} and {bad!r} are the same token")
    return ids[0], ids[1], ids[2]


def qwen_separator_id(tokenizer: Any, separator: str) -> int:
    if separator not in tokenizer.get_vocab():
        raise ConfigError(f"the step separator {separator!r} is not a token of the PRM's tokenizer")
    return int(tokenizer.convert_tokens_to_ids(separator))


def check_two_labels(labels: int) -> None:
    if labels != 2:
        raise ConfigError(f"a Qwen-style PRM has a two-class head; this one has {labels} labels")


def _config_labels(config: dict[str, Any], default: int) -> int:
    if isinstance(config.get("id2label"), dict) and config["id2label"]:
        return len(config["id2label"])
    return int(config.get("num_labels", default))


def _logits(output: Any) -> Any:
    return output.logits if hasattr(output, "logits") else output[0]


class ShepherdPRM(_HFVerifier):
    """A Math-Shepherd-style PRM: P(good) vs P(bad) of the next token at each step tag."""

    name = "hf-prm+shepherd"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        tag: str = SHEPHERD_TAG,
        good: str = SHEPHERD_GOOD,
        bad: str = SHEPHERD_BAD,
        **kwargs: Any,
    ) -> None:
        self.tag = tag
        self.tag_id, self.good_id, self.bad_id = shepherd_token_ids(tokenizer, tag, good, bad)
        super().__init__(model, tokenizer, **kwargs)

    def encode(self, prompt: str, solution: str) -> Encoded:
        steps = self.steps(solution)
        text, spans = shepherd_text(question_text(prompt), steps, self.tag)
        ids, offsets = _encode(self.tokenizer, text)
        if offsets is None:
            found = [i for i, t in enumerate(ids) if t == self.tag_id]
            positions = found[len(found) - len(spans) :] if len(found) >= len(spans) else []
        else:
            # The token holding each tag's last character: a tag-like string inside the text
            # (Russian "ки..." words) is never read.
            positions = []
            for _, end in spans:
                pos = next((i for i, (a, b) in enumerate(offsets) if a <= end - 1 < b), None)
                positions.append(-1 if pos is None else pos)
        if len(positions) != len(spans) or any(p < 0 or ids[p] != self.tag_id for p in positions):
            raise ConfigError(
                f"the PRM's tokenizer merged the step tag {self.tag!r} with the text around it; "
                f"cannot read step scores of {text[:80]!r}..."
            )
        return Encoded(tuple(ids), tuple(positions))

    def read(self, x: Any, mask: Any, chunk: list[Encoded]) -> list[list[float]]:
        import torch

        logits = _logits(self.model(input_ids=x, attention_mask=mask)).float()
        pair = logits[..., [self.good_id, self.bad_id]]
        good = torch.softmax(pair, dim=-1)[..., 0]
        return [good[r, list(e.positions)].tolist() for r, e in enumerate(chunk)]


class QwenPRM(_HFVerifier):
    """A Qwen2.5-Math-PRM-style PRM: softmax class 1 of a two-class token head at each separator."""

    name = "hf-prm+qwen"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        separator: str = QWEN_SEPARATOR,
        system: str = QWEN_SYSTEM,
        **kwargs: Any,
    ) -> None:
        check_two_labels(getattr(model.config, "num_labels", 2))
        self.separator, self.sep_id, self.system = separator, qwen_separator_id(tokenizer, separator), system
        super().__init__(model, tokenizer, **kwargs)

    def render(self, prompt: str, solution: str) -> str:
        messages = qwen_messages(question_text(prompt), self.steps(solution), self.separator, self.system)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return render_chatml(messages)

    def encode(self, prompt: str, solution: str) -> Encoded:
        n_steps = len(self.steps(solution))
        ids = list(self.tokenizer(self.render(prompt, solution))["input_ids"])
        positions = [i for i, t in enumerate(ids) if t == self.sep_id]
        if len(positions) != n_steps:
            raise ConfigError(
                f"expected {n_steps} {self.separator!r} separators in the PRM's input, found "
                f"{len(positions)}: the chat template adds or drops them"
            )
        return Encoded(tuple(ids), tuple(positions))

    def read(self, x: Any, mask: Any, chunk: list[Encoded]) -> list[list[float]]:
        import torch

        logits = _logits(self.model(input_ids=x, attention_mask=mask)).float()
        good = torch.softmax(logits[..., :2], dim=-1)[..., 1]
        return [good[r, list(e.positions)].tolist() for r, e in enumerate(chunk)]


def label_ids(tokenizer: Any, good: str, bad: str) -> tuple[int, int]:
    """Token ids of the good and bad labels written alone (how a chat template's turn holds them)."""
    ids = []
    for what, text in (("good label", good), ("bad label", bad)):
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise ConfigError(f"the {what} {text!r} is not one token of the PRM's tokenizer")
        ids.append(int(encoded[0]))
    if ids[0] == ids[1]:
        raise ConfigError(f"the good and bad labels {good!r} and {bad!r} are the same token")
    return ids[0], ids[1]


def check_chat_template(tokenizer: Any, what: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{what} reads a chat, but the tokenizer has no chat template")


class RLHFlowPRM(_HFVerifier):
    """An RLHFlow-style PRM (Llama3.1-8B-PRM-*): a causal LM reading a chat in which each step is a
    user turn answered "+"; a step's score is P(good) vs P(bad) of the next token where its "+" is.

    One forward pass scores every step (RLHFlow's own code runs one per step: the same numbers,
    since the conversation up to step k is a prefix of the whole one)."""

    name = "hf-prm+rlhflow"

    def __init__(
        self, model: Any, tokenizer: Any, good: str = SHEPHERD_GOOD, bad: str = SHEPHERD_BAD, **kwargs: Any
    ) -> None:
        check_chat_template(tokenizer, "an RLHFlow-style PRM")
        self.good = good
        self.good_id, self.bad_id = label_ids(tokenizer, good, bad)
        super().__init__(model, tokenizer, **kwargs)

    def _render(self, messages: list[dict[str, str]], last: bool) -> str:
        # continue_final_message: the text ends right after the last assistant "+".
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, continue_final_message=not last
        )

    def encode(self, prompt: str, solution: str) -> Encoded:
        steps = self.steps(solution)
        if not steps:
            return Encoded((), ())
        messages = rlhflow_messages(question_text(prompt), steps, self.good)
        text = self._render(messages, last=True)
        ids, offsets = _encode(self.tokenizer, text, add_special_tokens=False)
        positions = []
        for k in range(1, len(steps) + 1):
            prefix = self._render(messages[: 2 * k], last=False)
            if not (prefix.endswith(self.good) and text.startswith(prefix)):
                raise ConfigError(
                    "the PRM's chat template does not render a conversation as the start of a longer "
                    "one; cannot read step scores"
                )
            if offsets is None:  # a slow tokenizer: count the prefix's tokens
                at = len(self.tokenizer.encode(prefix, add_special_tokens=False)) - 1
            else:
                end = len(prefix)
                at = next((i for i, (a, b) in enumerate(offsets) if a <= end - 1 < b), -1)
                if at >= 0 and offsets[at] != (end - len(self.good), end):
                    at = -1
            if at < 1 or at >= len(ids) or ids[at] != self.good_id:
                raise ConfigError(
                    f"the PRM's tokenizer merged the label {self.good!r} with the text around it in "
                    "its chat template; cannot read step scores"
                )
            positions.append(at - 1)  # the position whose next token is the "+"
        return Encoded(tuple(ids), tuple(positions))

    def read(self, x: Any, mask: Any, chunk: list[Encoded]) -> list[list[float]]:
        import torch

        logits = _logits(self.model(input_ids=x, attention_mask=mask)).float()
        good = torch.softmax(logits[..., [self.good_id, self.bad_id]], dim=-1)[..., 0]
        return [good[r, list(e.positions)].tolist() for r, e in enumerate(chunk)]


class SequenceORM(_HFVerifier):
    """A sequence-classification ORM: one score for the whole (possibly partial) solution."""

    name = "hf-orm"
    outcome_model = True

    def __init__(self, model: Any, tokenizer: Any, positive_label: int | str | None = None, **kwargs: Any):
        labels = int(getattr(model.config, "num_labels", 1))
        self.positive = resolve_label(getattr(model.config, "id2label", None), labels, positive_label)
        self.num_labels = labels
        self.use_template = bool(getattr(tokenizer, "chat_template", None))
        super().__init__(model, tokenizer, **kwargs)
        # The classifier pools each row at its last token that is not padding.
        self.model.config.pad_token_id = self.pad_id

    def render(self, prompt: str, solution: str) -> str:
        if self.use_template:
            messages = [
                {"role": "user", "content": question_text(prompt)},
                {"role": "assistant", "content": solution.strip()},
            ]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return prompt + solution

    def encode(self, prompt: str, solution: str) -> Encoded:
        ids = list(self.tokenizer(self.render(prompt, solution))["input_ids"])
        return Encoded(tuple(ids), ())

    def _has_work(self, enc: Encoded) -> bool:
        return bool(enc.ids)

    def read(self, x: Any, mask: Any, chunk: list[Encoded]) -> list[list[float]]:
        import torch

        logits = _logits(self.model(input_ids=x, attention_mask=mask)).float()
        if self.num_labels == 1:
            probs = torch.sigmoid(logits[:, 0])
        else:
            probs = torch.softmax(logits, dim=-1)[:, self.positive]
        return [[float(p)] for p in probs]


def resolve_label(id2label: dict | None, labels: int, positive: int | str | None) -> int:
    """Index of the class that means "correct" in a classifier with ``labels`` classes."""
    names = {str(v).lower(): int(k) for k, v in (id2label or {}).items()}
    if positive is None:
        if labels <= 2:
            return labels - 1
        raise ConfigError(
            f"the ORM has {labels} labels ({sorted(names) or 'unnamed'}): say which means correct with "
            "positive_label="
        )
    if isinstance(positive, str) and not positive.lstrip("-").isdigit():
        if positive.lower() not in names:
            raise ConfigError(f"the ORM has no label {positive!r}; its labels are {sorted(names)}")
        return names[positive.lower()]
    index = int(positive)
    if not 0 <= index < labels:
        raise ConfigError(f"positive_label {index} is out of range for an ORM with {labels} labels")
    return index


# --- loading ------------------------------------------------------------------------------------


def load_hf_verifier(
    path: str | Path,
    format: str | None = None,
    *,
    device: str | None = "cpu",
    batch_size: int = 8,
    step_delimiter: str = "\n",
    trust_remote_code: bool = False,
    positive_label: int | str | None = None,
    dtype: str = "float32",
) -> _HFVerifier:
    """The reward model in ``path`` as a verifier; ``format`` is ``shepherd``, ``qwen``, ``rlhflow``
    or ``orm`` (None: told apart from the config and tokenizer; ``rlhflow`` is never guessed, since
    its models are plain chat LMs). Everything but the weights is checked first."""
    if format is not None and format not in HF_FORMATS:
        raise ConfigError(f"unknown reward-model format {format!r}: choose one of {list(HF_FORMATS)}")
    weights_dtype = torch_dtype(dtype)
    p, config = read_model_dir(path)
    tokenizer = load_tokenizer(p)
    fmt = format or detect_format(p, config, tokenizer)
    transformers = import_transformers()
    custom = config.get("auto_map")
    if custom and not trust_remote_code:
        raise ConfigError(
            f"the model in {p} runs its own code ({', '.join(sorted(custom))} in auto_map); load it with "
            "trust_remote_code=1 if you trust that code"
        )
    # Everything that can be checked without the weights is checked before loading them.
    if fmt == "shepherd":
        shepherd_token_ids(tokenizer, SHEPHERD_TAG, SHEPHERD_GOOD, SHEPHERD_BAD)
    elif fmt == "qwen":
        qwen_separator_id(tokenizer, QWEN_SEPARATOR)
        check_two_labels(_config_labels(config, 2))
    elif fmt == "rlhflow":
        check_chat_template(tokenizer, "an RLHFlow-style PRM")
        label_ids(tokenizer, SHEPHERD_GOOD, SHEPHERD_BAD)
    else:
        resolve_label(config.get("id2label"), _config_labels(config, 2), positive_label)
    common = dict(device=device, batch_size=batch_size, step_delimiter=step_delimiter)
    if fmt == "orm":
        model = _load_weights(
            transformers.AutoModelForSequenceClassification.from_pretrained,
            p,
            "sequence-classification reward model",
            trust_remote_code=trust_remote_code,
            dtype=weights_dtype,
        )
        return SequenceORM(model, tokenizer, positive_label=positive_label, **common)
    if fmt == "qwen":
        auto = transformers.AutoModel if custom else transformers.AutoModelForTokenClassification
        model = _load_weights(
            auto.from_pretrained,
            p,
            "token-classification PRM",
            trust_remote_code=trust_remote_code,
            dtype=weights_dtype,
        )
        return QwenPRM(model, tokenizer, **common)
    model = _load_weights(
        transformers.AutoModelForCausalLM.from_pretrained,
        p,
        "causal-LM PRM",
        trust_remote_code=trust_remote_code,
        dtype=weights_dtype,
    )
    if fmt == "rlhflow":
        return RLHFlowPRM(model, tokenizer, **common)
    return ShepherdPRM(model, tokenizer, **common)
