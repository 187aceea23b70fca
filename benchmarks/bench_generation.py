"""Generation throughput and peak memory of the embedded policy (EmbeddedGenerator).

Runs, on one level-5 test prompt, with temperature 1.0 and a fixed number of new tokens:

  (a) 1 sequence   -- one prompt, n=1
  (b) 64 samples   -- the same prompt, n=64 in one batch (one prefill, shared KV cache copied per row)
  (c) 64 prompts   -- 64 distinct level-5 prompts, n=1 each (for comparison with (b))

Each is timed after a warm-up as the median of several repeats; tokens/s is completion tokens /
wall time. The wall-time ratio (b)/(a) is compared with the goal of <= 8x. Peak memory of (b) is
measured in a fresh subprocess (process peak RSS from getrusage, and the peak during generation
alone from /proc/self/status VmHWM), next to the KV cache size computed from the model config.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_generation.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _common import PolicySource

# torch and ponder are imported inside functions: the memory subprocess must be started while this
# process is still small, because a child inherits its parent's peak RSS in getrusage's ru_maxrss
# (Linux carries the pre-exec high-water mark over exec).

LEVEL = 5
GOAL_RATIO = 8.0


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
    p.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per sample (default 128)")
    p.add_argument("--samples", type=int, default=64, help="samples of one prompt in run (b) (default 64)")
    p.add_argument("--prompts", type=int, default=64, help="distinct prompts in run (c) (default 64)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each run (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per run; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--natural-stop",
        action="store_true",
        help="let samples stop at <eos> (default: every sample runs exactly --max-new-tokens tokens)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("threads", "max_new_tokens", "samples", "prompts", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


# ---------------------------------------------------------------------------------------------
# Peak memory, measured in a fresh process


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the subprocess: one (b)-shaped generation, with its peak memory."""
    import resource

    from _common import kv_cache_bytes, level_prompts, load_policy, make_generator, prompt_tokens, set_threads

    from ponder.backends.base import SamplingParams
    from ponder.training.model import KVCache

    set_threads(args.threads)
    source = load_policy(args.weights, args.random_init, args.seed)
    generator = make_generator(source.model, fixed_length=not args.natural_stop)
    prompt = level_prompts(LEVEL, 1)[0]
    # Tiny untimed call so lazy one-off initialisation is not charged to the measurement.
    generator.generate([prompt], SamplingParams(n=1, max_new_tokens=2, seed=args.seed))

    # Record the largest KV cache the generator really allocates (wrapping, not editing, src).
    seen: list[int] = []
    original = KVCache.expand_rows

    def recording(self: KVCache, rows: Any, max_len: int) -> KVCache:
        out = original(self, rows, max_len)
        seen.append(out.nbytes())
        return out

    KVCache.expand_rows = recording  # type: ignore[method-assign]

    rss_before = _status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_reset = _reset_peak_rss()
    params = SamplingParams(
        n=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    generator.generate([prompt], params)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after = _status_kib("VmHWM")
    KVCache.expand_rows = original  # type: ignore[method-assign]

    config = source.model.config
    p_len = prompt_tokens(prompt)
    cache_len = p_len + min(args.max_new_tokens, config.max_seq_len - p_len)
    kib = 1024
    return {
        "rows": args.samples,
        "completion_tokens": generator.last_usage.completion_tokens,
        "ru_maxrss_process_peak_bytes": maxrss_after * kib,
        "ru_maxrss_before_generation_bytes": maxrss_before * kib,
        "ru_maxrss_delta_bytes": (maxrss_after - maxrss_before) * kib,
        "rss_before_generation_bytes": rss_before * kib if rss_before is not None else None,
        "vmhwm_reset_before_generation": hwm_reset,
        "peak_rss_during_generation_bytes": hwm_after * kib if hwm_reset and hwm_after else None,
        "generation_rss_increase_bytes": (
            (hwm_after - rss_before) * kib if hwm_reset and hwm_after and rss_before is not None else None
        ),
        "prompt_tokens": p_len,
        "kv_cache_length": cache_len,
        "kv_cache_bytes_computed": kv_cache_bytes(config, args.samples, cache_len),
        "prompt_kv_cache_bytes_computed": kv_cache_bytes(config, 1, p_len),
        "kv_cache_bytes_measured": max(seen) if seen else None,
    }


def run_memory_child(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child"]
    cmd += ["--threads", str(args.threads), "--max-new-tokens", str(args.max_new_tokens)]
    cmd += ["--samples", str(args.samples), "--temperature", str(args.temperature), "--seed", str(args.seed)]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.random_init:
        cmd.append("--random-init")
    if args.natural_stop:
        cmd.append("--natural-stop")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory subprocess failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Throughput


def report(
    args: argparse.Namespace, source: PolicySource, timings: list[Any], memory: dict[str, Any] | None
) -> dict[str, Any]:
    from _common import environment, fmt_bytes, markdown_table

    single, batch, distinct = timings
    ratio = batch.median_wall / single.median_wall
    mode = "natural stop at <eos>" if args.natural_stop else f"exactly {args.max_new_tokens} new tokens"
    print("## Generation throughput (embedded policy)\n")
    if source.fallback_note:
        print(f"**NOTE: {source.fallback_note}**\n")
    print(f"- model: {source.description}; {source.model.num_params():,} parameters")
    print(f"- torch {environment()['torch']}, {args.threads} thread(s)")
    print(
        f"- level-{LEVEL} test prompt(s), temperature {args.temperature}, {mode}; "
        f"median of {args.repeats} repeat(s) after {args.warmup} warm-up call(s)\n"
    )
    rows = []
    for t in timings:
        rows.append(
            [
                t.label,
                f"{t.n_prompts} x n={t.n}",
                f"{t.mean_tokens_per_row:.1f}",
                f"{t.median_wall * 1000:.1f}",
                f"{t.tokens_per_s:,.0f}",
                f"{t.median_wall / single.median_wall:.2f}x",
            ]
        )
    print(
        markdown_table(
            ["run", "prompts x samples", "tokens/row", "median wall (ms)", "tokens/s", "wall vs 1 seq"], rows
        )
    )
    verdict = "meets" if ratio <= GOAL_RATIO else "MISSES"
    print(
        f"\n{batch.rows} samples of one prompt take {ratio:.2f}x the wall time of 1 sample "
        f"({verdict} the goal of <= {GOAL_RATIO:.0f}x); throughput gain "
        f"{batch.tokens_per_s / single.tokens_per_s:.1f}x. "
        f"{distinct.rows} distinct prompts take {distinct.median_wall / batch.median_wall:.2f}x "
        f"the wall time of {batch.rows} samples of one prompt."
    )
    if memory is not None:
        print(f"\n### Peak memory of the {memory['rows']}-sample generation (fresh subprocess)\n")

        def b(key: str) -> str:
            return fmt_bytes(memory[key]) if memory.get(key) is not None else "n/a"

        mem_rows = [
            ["process peak RSS (getrusage ru_maxrss, whole process)", b("ru_maxrss_process_peak_bytes")],
            ["ru_maxrss growth during the generation", b("ru_maxrss_delta_bytes")],
            ["RSS just before the generation", b("rss_before_generation_bytes")],
            ["peak RSS during the generation (VmHWM, reset before)", b("peak_rss_during_generation_bytes")],
            ["RSS increase at the peak (VmHWM - RSS before)", b("generation_rss_increase_bytes")],
            [
                f"KV cache, computed from config ({memory['rows']} rows x {memory['kv_cache_length']} "
                "positions, fp32, keys+values)",
                b("kv_cache_bytes_computed"),
            ],
            ["KV cache, measured (KVCache.nbytes of the samples' cache)", b("kv_cache_bytes_measured")],
            [
                f"prompt KV cache, computed (1 row x {memory['prompt_tokens']})",
                b("prompt_kv_cache_bytes_computed"),
            ],
        ]
        print(markdown_table(["quantity", "value"], mem_rows))
        print(
            "\nru_maxrss growth is 0 when the generation's peak stays under the import/load peak; "
            "the VmHWM rows isolate the generation."
        )
    return {
        "benchmark": "generation",
        "model": {
            "description": source.description,
            "random_init": source.random_init,
            "weights_path": source.weights_path,
            "fallback_note": source.fallback_note,
            "config": asdict(source.model.config),
            "num_params": source.model.num_params(),
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "memory_child")},
        "environment": environment(),
        "runs": [t.as_dict() for t in timings],
        "wall_ratio_samples_vs_single": ratio,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": ratio <= GOAL_RATIO,
        "memory": memory,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return
    memory = None if args.no_memory else run_memory_child(args)

    from _common import level_prompts, load_policy, make_generator, set_threads, time_generation, write_json

    set_threads(args.threads)
    source = load_policy(args.weights, args.random_init, args.seed)
    generator = make_generator(source.model, fixed_length=not args.natural_stop)
    prompts = level_prompts(LEVEL, max(args.prompts, 1))
    common = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    timings = [
        time_generation(generator, "(a) 1 sequence", prompts[:1], 1, **common),
        time_generation(
            generator, f"(b) {args.samples} samples, 1 prompt", prompts[:1], args.samples, **common
        ),
        time_generation(
            generator, f"(c) {args.prompts} distinct prompts", prompts[: args.prompts], 1, **common
        ),
    ]
    payload = report(args, source, timings, memory)
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
