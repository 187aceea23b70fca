"""Eval recipes: the options of ``ponder eval`` kept in a YAML file (``ponder eval --config FILE``).

Each key is a long option of ``ponder eval`` without its dashes (``answer_format`` or
``answer-format``), plus ``run_dir`` for the run directory argument. Lists may be written as
YAML lists (``budgets: [1, 2, 4]``, ``seeds: [0, 1]``, ``levels: [1, 2]``) or as the command
line's comma-separated text; a strategy is ``name:key=value,...`` or a one-key mapping
``{beam_search: {beam_width: 4}}``::

    run_dir: runs/gsm8k-majority
    dataset: data/gsm8k_test.jsonl
    answer_format: gsm8k
    strategy:
      - majority: {temperature: 0.7, max_new_tokens: 512}
      - best_of_n
    budgets: [1, 2, 4, 8]
    backend: openai://127.0.0.1:8000/model?api=chat
    verifier: none

An option given on the command line overrides the file. The file is checked before any work:
an unknown key, a value of the wrong type, a strategy that does not exist, or a file it names
that is missing (the dataset, a policy file, a local model directory or GGUF file in ``backend``
or ``verifier``) is a ConfigError naming the file and the key. Relative paths are read from the
working directory, as on the command line.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ponder.errors import ConfigError

RUN_DIR = "run_dir"


def _comma_list(value: Any, what: str, kind: type) -> Any:
    """A YAML list (or one number) as the command line's comma-separated text."""
    if value is None or isinstance(value, str):
        return value
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, kind):
            raise ValueError(f"must be a list of {what} or comma-separated text, got {item!r}")
    return ",".join(str(item) for item in items)


def _strategy_text(item: Any) -> str:
    """``"name:k=v"`` as given, or ``{name: {k: v}}`` / ``{name: null}`` as ``"name:k=v"``."""
    if isinstance(item, str):
        return item
    if not (isinstance(item, dict) and len(item) == 1):
        raise ValueError(
            f"a strategy is 'name:key=value,...' or a one-key mapping {{name: {{key: value}}}}, got {item!r}"
        )
    ((name, params),) = item.items()
    if params is None:
        return str(name)
    if not isinstance(params, dict):
        raise ValueError(f"the parameters of strategy {name!r} must be a mapping, got {params!r}")
    parts = []
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if "," in text or "=" in str(key) or "," in str(key):
            raise ValueError(f"strategy {name!r}: parameter {key}={text} cannot hold ',' or '='")
        parts.append(f"{key}={text}")
    return f"{name}:{','.join(parts)}" if parts else str(name)


class EvalRecipe(BaseModel):
    """The options of ``ponder eval`` (None: not set in the file, so the command's default)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run_dir: str | None = Field(default=None, description="run directory: config, results.jsonl, report")
    dataset: str | None = None
    split: str | None = None
    answer_format: Literal["auto", "arithmetic", "gsm8k", "math", "number"] | None = None
    n_per_level: int | None = Field(default=None, ge=1)
    levels: str | None = None
    limit: int | None = Field(default=None, ge=1)
    dataset_seed: int | None = None
    question_field: str | None = None
    answer_field: str | None = None
    prompt_template: str | None = None
    strategy: list[str] | None = None
    budgets: str | None = None
    unit: Literal["samples", "tokens", "flops", "seconds"] | None = None
    seeds: str | None = None
    oracle_samples: int | None = Field(default=None, ge=0)
    policy: str | None = None
    resume: bool | None = None
    share_samples: bool | None = None
    report: Literal["md", "html", "none"] | None = None
    group_by: Literal["auto", "level", "oracle_bin"] | None = None
    difficulty_bins: str | None = None
    report_only: bool | None = None
    backend: str | None = None
    verifier: str | None = None
    ray: bool | None = None
    ray_address: str | None = None

    @field_validator("levels", "seeds", mode="before")
    @classmethod
    def _ints(cls, value: Any) -> Any:
        return _comma_list(value, "whole numbers", int)

    @field_validator("budgets", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _comma_list(value, "numbers", int | float)

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategies(cls, value: Any) -> Any:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ValueError("is empty: name at least one strategy")
        return [_strategy_text(item) for item in items]

    @field_validator("strategy")
    @classmethod
    def _known_strategies(cls, value: list[str] | None) -> list[str] | None:
        from ponder.eval.runner import parse_strategy

        for i, text in enumerate(value or []):
            try:
                parse_strategy(text)  # refuses an unknown strategy or parameter now
            except ConfigError as exc:
                raise ValueError(f"[{i}] {exc}") from None
        return value

    def given(self) -> dict[str, Any]:
        """The options the file sets."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


KEYS = tuple(EvalRecipe.model_fields)


def _normalise_keys(data: dict[Any, Any], source: str) -> dict[str, Any]:
    """``answer-format`` -> ``answer_format``; an unknown key is refused with the nearest known one."""
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).replace("-", "_")
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(
                f"{source}: unknown key {raw!r}{hint}; the keys are the options of ponder eval: "
                f"{', '.join(KEYS)}"
            )
        if key in out:
            raise ConfigError(f"{source}: key {key!r} is given twice")
        out[key] = value
    return out


def parse_recipe(data: Any, source: str = "recipe") -> EvalRecipe:
    """A recipe from parsed YAML; a ConfigError naming ``source`` and the key when it is wrong."""
    from ponder.serve.config import validation_message

    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping of options"
        raise ConfigError(f"{source} is {what}: write one 'option: value' per line")
    try:
        return EvalRecipe.model_validate(_normalise_keys(data, source))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_message(exc)}") from None


def load_recipe(path: str | Path) -> EvalRecipe:
    """The recipe in a YAML (or JSON) file, its keys and types checked (not yet its files)."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_recipe(data, source=f"recipe {path}")


# --- the files a recipe names -------------------------------------------------------------------


def _spec_path(body: str) -> str:
    return body.partition("?")[0]


def backend_paths(spec: str) -> list[str]:
    """Local files or directories a backend spec names (hf:/dir, gguf:/file, embedded:/file)."""
    body = spec.strip()
    for scheme in ("hf:", "gguf:", "embedded:"):
        if body.startswith(scheme) and _spec_path(body[len(scheme) :]):
            return [_spec_path(body[len(scheme) :])]
    return []


def verifier_paths(spec: str) -> list[str]:
    """Local files or directories a verifier spec names (hf-prm:/dir, judge:hf:/dir, ...)."""
    from ponder.verifiers.spec import parse_spec

    kind, _, target = parse_spec(spec)
    if kind == "judge":
        return backend_paths(target)
    if kind in ("hf-prm", "hf-orm", "hf-judge", "code-tests", "embedded") and _spec_path(target):
        return [_spec_path(target)]
    return []


def check_files(options: dict[str, Any], source: str) -> None:
    """Every file the options name exists (``options`` holds only what the recipe set)."""
    wanted: list[tuple[str, str]] = []
    dataset = options.get("dataset")
    if dataset is not None and dataset != "builtin":
        wanted.append(("dataset", dataset))
    if options.get("policy") is not None:
        wanted.append(("policy", options["policy"]))
    if options.get("backend") is not None:
        wanted += [("backend", p) for p in backend_paths(options["backend"])]
    if options.get("verifier") not in (None, "none"):
        wanted += [("verifier", p) for p in verifier_paths(options["verifier"])]
    for key, name in wanted:
        if not Path(name).expanduser().exists():
            raise ConfigError(f"{source}: {key}: {name} does not exist")


# --- the command line ---------------------------------------------------------------------------


def recipe_options(path: str | Path, given_on_command_line: set[str]) -> dict[str, Any]:
    """The recipe's options that the command line did not give, as the command's parameters
    (``run_dir`` a Path), after checking the files they name."""
    recipe = load_recipe(path)
    options = {k: v for k, v in recipe.given().items() if k not in given_on_command_line}
    check_files(options, f"recipe {path}")
    if RUN_DIR in options:
        options[RUN_DIR] = Path(options[RUN_DIR])
    return options
