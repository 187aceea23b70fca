"""The embedded transformer: a small decoder-only model with a static KV cache.

One architecture serves both roles: with ``head="lm"`` it is the policy (next-token logits, tied
to the embedding); with ``head="reward"`` it is the verifier (two logits per position: the
process reward read at step delimiters and the outcome reward read at the end).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ponder.errors import ConfigError, WeightsError

SURPRISE_FEATURES = 6


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 99  # CharTokenizer().vocab_size: 3 specials + newline + 95 printable ASCII
    d_model: int = 192
    n_layer: int = 6
    n_head: int = 6
    max_seq_len: int = 512
    head: str = "lm"  # "lm" (policy) or "reward" (PRM + ORM heads)
    # Reward models only. When > 0, the first ``surprise_after`` blocks are a policy's trunk, read
    # out through its own final norm and the tied embedding into a next-token distribution; the
    # log-probability of each token actually written, the entropy of the distribution it came
    # from and its gap to the likeliest token join the residual stream before the later blocks.
    # A slip the policy made while sampling shows up there as surprise the reward layers can see.
    surprise_after: int = 0

    def __post_init__(self) -> None:
        if self.head not in ("lm", "reward"):
            raise ConfigError(f"model head must be 'lm' or 'reward', got {self.head!r}")
        if self.surprise_after and (self.head != "reward" or not 0 < self.surprise_after < self.n_layer):
            raise ConfigError(
                f"surprise_after={self.surprise_after} needs a reward model with more blocks "
                f"than that (head={self.head!r}, n_layer={self.n_layer})"
            )
        if self.d_model % self.n_head:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class KVCache:
    """Pre-allocated keys and values for every layer: ``(layers, batch, heads, max_len, head_dim)``."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype) -> None:
        shape = (config.n_layer, batch, config.n_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def expand_rows(self, rows: torch.Tensor, max_len: int) -> KVCache:
        """A new cache whose row i copies row ``rows[i]`` of this one (prompt reuse, pruning)."""
        out = KVCache.__new__(KVCache)
        n_layer, _, n_head, _, head_dim = self.k.shape
        shape = (n_layer, len(rows), n_head, max_len, head_dim)
        out.k = torch.zeros(shape, dtype=self.k.dtype)
        out.v = torch.zeros(shape, dtype=self.v.dtype)
        out.k[:, :, :, : self.length] = self.k[:, rows, :, : self.length]
        out.v[:, :, :, : self.length] = self.v[:, rows, :, : self.length]
        out.length = self.length
        return out

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (drop finished sequences so they cost nothing more)."""
        self.k = self.k[:, rows]
        self.v = self.v[:, rows]

    def nbytes(self) -> int:
        return self.k.element_size() * self.k.numel() * 2


def rope_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of rotary embeddings for ``positions`` (batch, time) -> (batch, 1, time, head_dim/2)."""
    inv_freq = 1.0 / (
        10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    )
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Rotary positions make attention depend on relative offsets, which is what copying an
    # operand from the previous line and aligning digits need.
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is None:
            # Training / scoring: plain causal attention over the given sequence.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            start = cache.length
            cache.k[layer, :, :, start : start + t] = k
            cache.v[layer, :, :, start : start + t] = v
            keys = cache.k[layer, :, :, : start + t]
            values = cache.v[layer, :, :, : start + t]
            if mask is None and t > 1:
                # Causal over the new tokens, all cached keys visible (is_causal would align the
                # triangle to the top-left, ignoring the cache).
                mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model, bias=False),
            nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model, bias=False),
        )

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, mask, cache, layer)
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Decoder-only transformer with rotary positions and pre-norm blocks."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        if config.head == "lm":
            self.out = nn.Linear(config.d_model, config.vocab_size, bias=False)
            self.out.weight = self.tok_emb.weight
        else:
            self.out = nn.Linear(config.d_model, 2)
        if config.surprise_after:
            self.trunk_norm = nn.LayerNorm(config.d_model)
            self.surprise = nn.Linear(SURPRISE_FEATURES, config.d_model)
            # A direct path from the features to the rewards: a slip is then learnable at once,
            # while the blocks learn what the features miss.
            self.surprise_out = nn.Linear(SURPRISE_FEATURES, 2)
            # The step delimiter's id: lines are steps (see CharTokenizer).
            from ponder.training.tokenizer import CharTokenizer

            self.delimiter_id = CharTokenizer().token_of("\n")
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.head != "lm":
            n -= self.tok_emb.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits ``(batch, time, vocab)`` for the LM head, ``(batch, time, 2)`` for the reward head.

        ``mask`` is a boolean ``(batch, 1, time, keys)`` attention mask (True = may attend); when
        None, attention is causal over ``idx``. With a cache, keys are the cached ones plus these.
        """
        b, t = idx.shape
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + t, device=idx.device).unsqueeze(0).expand(b, t)
        if int(positions.max()) >= self.config.max_seq_len:
            raise ConfigError(
                f"sequence position {int(positions.max())} is past the model's context of "
                f"{self.config.max_seq_len} tokens"
            )
        x = self.tok_emb(idx)
        rope = rope_tables(positions, self.config.head_dim)
        skip = None
        for i, block in enumerate(self.blocks):
            if i == self.config.surprise_after and i:
                feats = self.surprise_features(x, idx)
                x = x + self.surprise(feats)
                skip = self.surprise_out(feats)
            x = block(x, rope, mask, cache, i)
        if cache is not None:
            cache.length += t
        out = self.out(self.ln_f(x))
        return out if skip is None else out + skip

    def surprise_features(self, trunk_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``(batch, time, SURPRISE_FEATURES)`` surprise of the trunk at each token.

        Per token: its log-prob under the trunk, the entropy of the distribution it was drawn
        from, its gap to the likeliest token; the lowest log-prob and the summed log-prob so far
        in its line; the lowest log-prob so far after the question line. The running values let a
        step's last token see the worst slip of the step and of the whole solution directly.
        """
        logp = F.log_softmax(F.linear(self.trunk_norm(trunk_out), self.tok_emb.weight).float(), dim=-1)
        prev = logp[:, :-1]
        token_logp = F.pad(prev.gather(-1, idx[:, 1:].unsqueeze(-1)).squeeze(-1), (1, 0)).clamp(min=-30.0)
        entropy = F.pad(-(prev.exp() * prev).sum(-1), (1, 0))
        gap = F.pad(prev.max(-1).values, (1, 0)) - token_logp
        # A line's delimiter closes it, so the line index of a token counts earlier delimiters.
        is_delim = (idx == self.delimiter_id).float()
        line = torch.cumsum(is_delim, dim=1) - is_delim
        line_min = _segment_cummin(token_logp, line)
        line_sum = _segment_cumsum(token_logp, line)
        sol_min = _segment_cummin(token_logp, line.clamp(max=1.0))
        feats = torch.stack([token_logp, entropy, gap, line_min, line_sum, sol_min], dim=-1)
        return (feats / 10.0).to(trunk_out.dtype)


def _segment_cummin(values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Running minimum along time that restarts where ``segment`` (non-decreasing) steps up."""
    offset = 100.0 * segment  # values lie in [-30, 0]: earlier segments can never win the min
    return torch.cummin(values - offset, dim=1).values + offset


def _segment_cumsum(values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    total = torch.cumsum(values, dim=1)
    starts = segment != F.pad(segment, (1, 0), value=-1.0)[:, :-1]
    base = torch.where(starts, total - values, torch.zeros_like(total))
    # Log-probs are <= 0, so the running total only falls: the latest segment start has the
    # largest negated base, and a running max finds it.
    latest = torch.cummax(torch.where(starts, base.neg(), torch.full_like(base, -1e9)), dim=1).values
    return total + latest


def save_model(model: TinyTransformer, path: str | Path, metadata: dict | None = None) -> None:
    """Save weights as safetensors (fp16 on disk to halve the size) with the config beside them."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    if model.config.head == "lm":
        state.pop("out.weight", None)  # tied to tok_emb.weight
    meta = {"config": json.dumps(asdict(model.config))}
    if metadata:
        meta["ponder"] = json.dumps(metadata)
    save_file(state, str(path), metadata=meta)


def load_model(path: str | Path) -> tuple[TinyTransformer, dict]:
    """Load a model saved by :func:`save_model`; errors name the file and what is wrong with it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise WeightsError(f"weight file {path} is corrupted or not a safetensors file: {exc}") from exc
    if "config" not in meta:
        raise WeightsError(f"weight file {path} has no ponder model config in its metadata")
    try:
        config = ModelConfig(**json.loads(meta["config"]))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"weight file {path} has an invalid model config: {exc}") from exc
    model = TinyTransformer(config)
    state = {k: v.to(torch.float32) for k, v in state.items()}
    if config.head == "lm":
        state["out.weight"] = state.get("tok_emb.weight", torch.empty(0))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weight file {path} does not match its config: {exc}") from exc
    model.eval()
    extra = json.loads(meta["ponder"]) if "ponder" in meta else {}
    return model, extra
