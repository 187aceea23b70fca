"""Which models a run or a policy file belongs to: a hash of each model's weights.

A run directory and a calibrated policy record these, so that results of one model are never mixed
with, or applied to, another.
"""

from __future__ import annotations

import hashlib
from typing import Any

_CACHE: dict[int, tuple[Any, str]] = {}


def fingerprint(model: object | None) -> str | None:
    """``sha256:<hex>`` of a backend's weights.

    A backend may say itself (a ``fingerprint`` attribute or method); one wrapping a torch module
    (``.model``) is hashed from its state dict (names, dtypes, shapes, bytes); anything else is
    ``unverified:<class>:<name>``, which matches only the same kind of backend.
    """
    if model is None:
        return None
    own = getattr(model, "fingerprint", None)
    if own is not None:
        return str(own() if callable(own) else own)
    module = getattr(model, "model", None)
    if module is not None and hasattr(module, "state_dict"):
        cached = _CACHE.get(id(module))
        if cached is not None and cached[0] is module:
            return cached[1]
        h = hashlib.sha256()
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().contiguous().cpu()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if t.numel() else b"")
        digest = f"sha256:{h.hexdigest()[:32]}"
        _CACHE[id(module)] = (module, digest)
        return digest
    return f"unverified:{type(model).__name__}:{getattr(model, 'name', '')}"


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def models_identity(generator: object, verifier: object | None) -> dict[str, Any]:
    """What a run or policy records about its models."""
    return {
        "policy": fingerprint(generator),
        "policy_params": int(getattr(generator, "num_params", 0) or 0),
        "verifier": fingerprint(verifier),
        "verifier_params": int(getattr(verifier, "num_params", 0) or 0) if verifier is not None else 0,
    }


def describe_mismatch(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The model fields that differ, as ``field: recorded X, now Y`` lines."""
    out = []
    for key in ("policy", "verifier"):
        if expected.get(key) != actual.get(key):
            out.append(f"{key} model: recorded {expected.get(key)}, now {actual.get(key)}")
    return out
