"""Dynamic int8 quantisation of the embedded policy: speed, size and greedy accuracy vs fp32.

The policy's nn.Linear layers are quantised with torch.ao.quantization.quantize_dynamic (int8
weights, activations quantised on the fly). The LM head ``out`` is tied to the token embedding;
quantising it gives the head its own int8 copy and leaves the embedding in fp32 (the tie is broken,
which is harmless for inference). ``--quantize auto`` (the default) quantises every Linear, checks
that the result runs in EmbeddedGenerator with finite logits, and falls back to the blocks' Linear
layers alone if it does not; the layers quantised are printed.

Reports:
  - generation tokens/s, fp32 vs int8, for 1 sample and for 64 samples of one level-5 prompt
    (same protocol as bench_generation.py: warm-up, median of repeats, fixed number of new tokens)
  - model size in memory (unique parameter/buffer tensors) and serialised, fp32 vs int8
  - greedy accuracy per level on make_split("test", n_per_level=N), fp32 vs int8, and the change

    PYTHONPATH=src .venv/bin/python benchmarks/bench_int8.py [--n-per-level 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from _common import (
    PolicySource,
    Timing,
    environment,
    fmt_bytes,
    level_prompts,
    load_policy,
    make_generator,
    markdown_table,
    set_threads,
    time_generation,
    write_json,
)
from torch import nn

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.eval.metrics import greedy_correct, per_level
from ponder.tasks.arithmetic import LEVELS, make_split
from ponder.training.model import TinyTransformer
from ponder.training.tokenizer import CharTokenizer

LEVEL = 5

# torch.ao.quantization is deprecated upstream (in favour of torchao) but still works in this torch;
# silence its per-call warnings and say so once in the output instead.
warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="policy weights (default: the shipped policy, ponder's policy_path())")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="use an untrained model of the policy's shape (d_model=128, n_layer=4, n_head=4); "
        "also the fallback when the weight file does not exist",
    )
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument(
        "--quantize",
        choices=("auto", "all", "blocks"),
        default="auto",
        help="which nn.Linear layers: all (blocks + tied LM head), blocks (transformer blocks only), "
        "auto = all, falling back to blocks if the quantised model fails the generator check",
    )
    p.add_argument("--n-per-level", type=int, default=100, help="test problems per level (default 100)")
    p.add_argument(
        "--levels", type=int, nargs="+", default=sorted(LEVELS), help="levels to score (default: all)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="prompts per greedy generate call")
    p.add_argument("--no-accuracy", action="store_true", help="skip the greedy accuracy comparison")
    p.add_argument(
        "--max-new-tokens", type=int, default=128, help="new tokens per timed sample (default 128)"
    )
    p.add_argument(
        "--samples", type=int, default=64, help="samples of one prompt in the batch run (default 64)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the timed runs")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each timed run (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per run; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--natural-stop",
        action="store_true",
        help="let timed samples stop at <eos> (default: exactly --max-new-tokens tokens each)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    for name in ("threads", "n_per_level", "batch_size", "max_new_tokens", "samples", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    unknown = sorted(set(args.levels) - set(LEVELS))
    if unknown:
        p.error(f"unknown level(s) {unknown}: levels are {sorted(LEVELS)}")
    return args


# ---------------------------------------------------------------------------------------------
# Quantisation


def quantize(model: TinyTransformer, scope: str) -> tuple[TinyTransformer, list[str]]:
    """A dynamically int8-quantised copy of ``model`` and the names of its quantised layers."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    if scope == "all":
        spec: Any = {nn.Linear}
    elif scope == "blocks":
        spec = {"blocks": default_dynamic_qconfig}
    else:
        raise ValueError(f"unknown quantisation scope {scope!r}")
    quantized = quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8).eval()
    names = [name for name, m in quantized.named_modules() if isinstance(m, DynamicLinear)]
    return quantized, names


def summarize_layers(names: list[str]) -> str:
    """``blocks.0.attn.qkv, blocks.1.attn.qkv, ...`` -> ``blocks.{0..3}.attn.qkv, ...``."""
    groups: dict[str, list[int]] = {}
    others: list[str] = []
    for name in names:
        parts = name.split(".")
        if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
            groups.setdefault(".".join(parts[2:]), []).append(int(parts[1]))
        else:
            others.append(name)
    out = []
    for suffix, idx in groups.items():
        span = f"{min(idx)}..{max(idx)}" if len(idx) > 1 else str(idx[0])
        out.append(f"blocks.{{{span}}}.{suffix}")
    out += [f"{n} (tied LM head: int8 copy, tok_emb stays fp32)" if n == "out" else n for n in others]
    return ", ".join(out)


def check_quantized(fp32: TinyTransformer, int8: TinyTransformer) -> dict[str, Any]:
    """Does the int8 model run in EmbeddedGenerator, and how close are its logits to fp32's?"""
    problems = make_split("test", levels=[LEVEL], n_per_level=8, seed=1)
    tok = CharTokenizer()
    # Level-5 solutions have fixed digit widths, so these sequences share one length.
    seqs = [tok.encode(p.prompt + p.solution, bos=True) + [tok.eos_id] for p in problems]
    length = min(len(s) for s in seqs)
    ids = torch.tensor([s[:length] for s in seqs])
    result: dict[str, Any] = {"ok": False, "error": None}
    try:
        with torch.inference_mode():
            ref, got = fp32(ids), int8(ids)
        result["finite_logits"] = bool(torch.isfinite(got).all())
        result["max_abs_logit_diff"] = float((ref - got).abs().max())
        result["top1_agreement"] = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
        out = EmbeddedGenerator(int8).generate(
            [problems[0].prompt], SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=0)
        )
        result["generator_ok"] = len(out) == 1 and len(out[0]) == 2
        result["ok"] = result["finite_logits"] and result["generator_ok"]
    except Exception as exc:  # any failure means: try the narrower scope
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def quantize_checked(model: TinyTransformer, mode: str) -> tuple[TinyTransformer, str, list[str], list[dict]]:
    """Quantise per ``mode``; in auto mode fall back from all Linear layers to the blocks' only."""
    scopes = ["all", "blocks"] if mode == "auto" else [mode]
    attempts: list[dict] = []
    for scope in scopes:
        try:
            quantized, names = quantize(model, scope)
            check = check_quantized(model, quantized)
        except Exception as exc:
            check = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        attempts.append({"scope": scope, **check})
        if check["ok"]:
            return quantized, scope, names, attempts
    raise SystemExit(f"int8 quantisation failed the generator check: {attempts}")


# ---------------------------------------------------------------------------------------------
# Size


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def _nbytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: set[tuple[int, int, torch.dtype]] = set()
    total = 0
    for t in tensors:
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:  # tied weights count once
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def model_sizes(model: TinyTransformer, quantized_names: list[str]) -> dict[str, int]:
    """Bytes of the unique tensors the model holds, of the (to be) quantised layers' weights, and
    of its serialised state_dict. Int8 weights are counted unpacked (1 byte per weight)."""
    state = model.state_dict()
    modules = dict(model.named_modules())
    layer_tensors = []
    for name in quantized_names:
        m = modules[name]
        if isinstance(m, nn.Linear):
            layer_tensors += [m.weight] + ([m.bias] if m.bias is not None else [])
        else:  # dynamic quantised Linear
            layer_tensors += [t for t in m._weight_bias() if t is not None]
    buf = io.BytesIO()
    torch.save(state, buf)
    return {
        "in_memory_bytes": _nbytes(t for v in state.values() for t in _tensors(v)),
        "quantized_layers_weight_bytes": sum(t.numel() * t.element_size() for t in layer_tensors),
        "serialized_state_dict_bytes": buf.getbuffer().nbytes,
    }


# ---------------------------------------------------------------------------------------------


def time_both(
    args: argparse.Namespace, fp32: TinyTransformer, int8: TinyTransformer
) -> dict[str, dict[str, Timing]]:
    prompt = level_prompts(LEVEL, 1)[0]
    gens = {
        "fp32": make_generator(fp32, fixed_length=not args.natural_stop),
        "int8": make_generator(int8, fixed_length=not args.natural_stop),
    }
    common = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    out: dict[str, dict[str, Timing]] = {"fp32": {}, "int8": {}}
    for n, key in ((1, "single"), (args.samples, "batch")):
        for name, gen in gens.items():  # interleaved so drift in machine load hits both alike
            out[name][key] = time_generation(gen, f"{name} n={n}", [prompt], n, **common)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    source: PolicySource = load_policy(args.weights, args.random_init, args.seed)
    fp32 = source.model
    int8, scope, names, attempts = quantize_checked(fp32, args.quantize)
    timings = time_both(args, fp32, int8)
    sizes = {"fp32": model_sizes(fp32, names), "int8": model_sizes(int8, names)}

    accuracy: dict[str, Any] | None = None
    if not args.no_accuracy:
        problems = make_split("test", levels=args.levels, n_per_level=args.n_per_level, seed=0)
        ok = {
            name: greedy_correct(EmbeddedGenerator(m), problems, batch_size=args.batch_size)
            for name, m in (("fp32", fp32), ("int8", int8))
        }
        flips: dict[int, dict[str, int]] = {}
        for p, a, b in zip(problems, ok["fp32"], ok["int8"]):
            f = flips.setdefault(p.level, {"right_to_wrong": 0, "wrong_to_right": 0})
            if a and not b:
                f["right_to_wrong"] += 1
            elif b and not a:
                f["wrong_to_right"] += 1
        accuracy = {
            "n_per_level": args.n_per_level,
            "per_level": {name: per_level(problems, [float(x) for x in vals]) for name, vals in ok.items()},
            "overall": {name: sum(vals) / len(vals) for name, vals in ok.items()},
            "flips": flips,
        }

    # --- report --------------------------------------------------------------------------------
    mode = "natural stop at <eos>" if args.natural_stop else f"exactly {args.max_new_tokens} new tokens"
    print("## Dynamic int8 quantisation of the embedded policy\n")
    if source.fallback_note:
        print(f"**NOTE: {source.fallback_note}**\n")
    print(f"- model: {source.description}; {fp32.num_params():,} parameters")
    print(
        f"- quantised with torch.ao.quantization.quantize_dynamic (qint8 weights, engine "
        f"{torch.backends.quantized.engine}; torch.ao.quantization is deprecated upstream), "
        f"scope `{scope}` (--quantize {args.quantize}): {len(names)} Linear layers: {summarize_layers(names)}"
    )
    for a in attempts:
        status = "ok" if a["ok"] else f"failed ({a.get('error') or 'non-finite logits / generator check'})"
        detail = ""
        if "max_abs_logit_diff" in a:
            detail = (
                f"; teacher-forced logits vs fp32: max |diff| {a['max_abs_logit_diff']:.4f}, "
                f"top-1 agreement {a['top1_agreement']:.1%}"
            )
        print(f"- generator check, scope `{a['scope']}`: {status}{detail}")
    print(
        f"- torch {torch.__version__}, {args.threads} thread(s); timed runs: level-{LEVEL} test prompt, "
        f"temperature {args.temperature}, {mode}, median of {args.repeats} after {args.warmup} warm-up\n"
    )

    print("### Generation speed\n")
    speed_rows = []
    for key, label in (("single", "1 sample"), ("batch", f"{args.samples} samples, 1 prompt")):
        f, q = timings["fp32"][key], timings["int8"][key]
        speed_rows.append(
            [
                label,
                f"{f.tokens_per_s:,.0f}",
                f"{q.tokens_per_s:,.0f}",
                f"{q.tokens_per_s / f.tokens_per_s:.2f}x",
                f"{f.median_wall * 1000:.1f} / {q.median_wall * 1000:.1f}",
            ]
        )
    print(
        markdown_table(
            ["run", "fp32 tokens/s", "int8 tokens/s", "int8 speed-up", "wall ms fp32 / int8"], speed_rows
        )
    )

    print("\n### Model size\n")
    size_rows = []
    for key, label in (
        ("in_memory_bytes", "parameters + buffers in memory (unique tensors)"),
        ("quantized_layers_weight_bytes", f"weights of the {len(names)} quantised Linear layers"),
        ("serialized_state_dict_bytes", "serialised state_dict (torch.save)"),
    ):
        f, q = sizes["fp32"][key], sizes["int8"][key]
        size_rows.append([label, fmt_bytes(f), fmt_bytes(q), f"{q / f:.2f}"])
    print(markdown_table(["quantity", "fp32", "int8", "int8 / fp32"], size_rows))
    if "out" in names:
        print(
            "\nThe fp32 LM head shares the embedding's storage (counted once); the int8 model keeps the "
            "fp32 embedding and an int8 copy of the head."
        )

    if accuracy is not None:
        print(f"\n### Greedy accuracy, test split, {args.n_per_level} problems per level\n")
        acc_rows = []
        for level in sorted(accuracy["per_level"]["fp32"]):
            f = accuracy["per_level"]["fp32"][level]
            q = accuracy["per_level"]["int8"][level]
            fl = accuracy["flips"][level]
            acc_rows.append(
                [
                    str(level),
                    f"{f:.1%}",
                    f"{q:.1%}",
                    f"{(q - f) * 100:+.1f} pp",
                    f"{fl['right_to_wrong']} / {fl['wrong_to_right']}",
                ]
            )
        f, q = accuracy["overall"]["fp32"], accuracy["overall"]["int8"]
        total_flips = [
            sum(fl[k] for fl in accuracy["flips"].values()) for k in ("right_to_wrong", "wrong_to_right")
        ]
        acc_rows.append(
            [
                "all",
                f"{f:.1%}",
                f"{q:.1%}",
                f"{(q - f) * 100:+.1f} pp",
                f"{total_flips[0]} / {total_flips[1]}",
            ]
        )
        print(markdown_table(["level", "fp32", "int8", "change", "right->wrong / wrong->right"], acc_rows))

    if args.json:
        payload = {
            "benchmark": "int8",
            "model": {
                "description": source.description,
                "random_init": source.random_init,
                "weights_path": source.weights_path,
                "fallback_note": source.fallback_note,
                "config": asdict(fp32.config),
                "num_params": fp32.num_params(),
            },
            "quantization": {
                "method": "torch.ao.quantization.quantize_dynamic, dtype qint8",
                "mode": args.quantize,
                "scope": scope,
                "layers": names,
                "attempts": attempts,
            },
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "environment": environment(),
            "speed": {name: {key: t.as_dict() for key, t in runs.items()} for name, runs in timings.items()},
            "speedup": {
                key: timings["int8"][key].tokens_per_s / timings["fp32"][key].tokens_per_s
                for key in ("single", "batch")
            },
            "sizes": sizes,
            "accuracy": accuracy,
        }
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
