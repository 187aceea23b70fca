"""Evaluation datasets: the built-in task, or question/answer records from a JSONL file, a parquet
file, or a local Hugging Face ``datasets`` directory; and the answer formats that grade them.

Answer formats (how a record's gold answer and a model's final answer are read, and compared):

- ``arithmetic``: the built-in task (a chain such as ``48+27-13``; the model writes ``A:`` lines).
- ``gsm8k``: the gold answer ends in ``#### N``; a model's answer is its ``#### N``, else the
  number after "the answer is", else its last number.
- ``math``: the gold answer is the last ``\\boxed{...}`` of the record's solution (or the bare
  answer); a model's answer is its last ``\\boxed{...}``. Equivalence by math-verify.
- ``number``: a bare numeric gold answer, read from the model like ``gsm8k``.

Strategies vote on answer *keys* (normalised strings: ``"1,000.0"`` and ``"1000"`` are one
answer); the final answer is graded with math-verify, so ``\\frac{1}{2}`` matches ``0.5``.
Everything is local: nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.tasks.answers import answer_extractor
from ponder.tasks.answers import extract_answer as extract_arithmetic
from ponder.tasks.arithmetic import LEVELS, make_split, parse_question

ANSWER_FORMATS = ("arithmetic", "gsm8k", "math", "number")
QUESTION_FIELDS = ("question", "problem", "prompt", "input")
ANSWER_FIELDS = ("answer", "final_answer", "solution", "target", "output")
DEFAULT_TEMPLATE = "{question}\n"


@dataclass(frozen=True)
class EvalProblem:
    """One question to evaluate: what the generator is given, and the gold final answer (as text)."""

    id: str
    question: str
    prompt: str
    answer: str
    level: int | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    problems: tuple[EvalProblem, ...]
    answer_format: str

    @property
    def fingerprint(self) -> str:
        """A hash of every problem's id, prompt and answer: a changed dataset is a different run."""
        h = hashlib.sha256(self.answer_format.encode())
        for p in self.problems:
            h.update(json.dumps([p.id, p.prompt, p.answer, p.level]).encode())
        return h.hexdigest()[:16]

    @property
    def levels(self) -> list[int]:
        return sorted({p.level for p in self.problems if p.level is not None})


# --- answer formats ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalize_number(text: str) -> str | None:
    """``"$1,000.50"`` -> ``"1000.5"``; None when ``text`` is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: a cut-off answer


def normalize_latex(text: str) -> str:
    """A voting key for a LaTeX answer: spacing, sizing and fraction spelling removed."""
    s = text.strip().strip("$").strip()
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", "")):
        s = s.replace(old, new)
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^{\\circ}", ""), ("^\\circ", "")):
        s = s.replace(old, new)
    s = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    number = normalize_number(s)
    return number if number is not None else s


def _model_number(text: str) -> str | None:
    if "####" in text:
        tail = text.rsplit("####", 1)[1].split()
        return normalize_number(tail[0]) if tail else None
    m = re.findall(r"answer is[:\s]*\$?\\?\(?\s*(-?[\d,]*\.?\d+)", text, flags=re.IGNORECASE)
    if m:
        return normalize_number(m[-1])
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def _math_verify_equal(gold: str, predicted: str) -> bool:
    from math_verify import parse, verify

    # math-verify times itself out with SIGALRM, which only the main thread may use.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    g = parse(f"${gold}$", parsing_timeout=timeout)
    p = parse(f"${predicted}$", parsing_timeout=timeout)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=timeout))


@dataclass(frozen=True)
class AnswerFormat:
    """How one format reads gold answers and model answers, and compares them."""

    name: str

    def gold(self, raw: Any, where: str) -> str:
        """The gold final answer of a record (raises ConfigError naming ``where`` if it has none)."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise ConfigError(f"{where} has no answer")
        text = str(raw).strip()
        if self.name == "arithmetic":
            if not re.fullmatch(r"\d+", text):
                raise ConfigError(f"{where}: answer {text!r} is not a whole number (format arithmetic)")
            return str(int(text))
        if self.name == "gsm8k":
            body = text.rsplit("####", 1)[1] if "####" in text else text
            number = normalize_number(body)
            if number is None:
                raise ConfigError(
                    f"{where}: answer {text[-60:]!r} has no GSM8K final answer ('#### N' with a number)"
                )
            return number
        if self.name == "number":
            number = normalize_number(text)
            if number is None:
                raise ConfigError(f"{where}: answer {text[-60:]!r} is not a number (answer format number)")
            return number
        boxed = last_boxed(text)
        if boxed is not None:
            return boxed
        if "\\boxed" in text or len(text) > 200:
            raise ConfigError(f"{where}: answer {text[-60:]!r} has no complete \\boxed{{...}} final answer")
        return text.strip("$").strip()

    def key(self, text: str) -> Hashable | None:
        """A model output's final answer as a voting key (None when it gives none)."""
        if self.name == "arithmetic":
            return extract_arithmetic(text)
        if self.name in ("gsm8k", "number"):
            return _model_number(text)
        boxed = last_boxed(text)
        return normalize_latex(boxed) if boxed else None

    def is_correct(self, predicted: Hashable | None, gold: str) -> bool:
        """Is the key a strategy chose equivalent to the gold answer?"""
        if predicted is None:
            return False
        if self.name == "arithmetic":
            return str(predicted) == gold
        if self.name in ("gsm8k", "number"):
            a, b = normalize_number(str(predicted)), normalize_number(gold)
            return a is not None and b is not None and Decimal(a) == Decimal(b)
        if normalize_latex(str(predicted)) == normalize_latex(gold):
            return True
        return _math_verify_equal(gold, str(predicted))

    def strategy_context(self) -> Any:
        """The context strategies run in, so their votes use this format's answers."""
        if self.name == "arithmetic":
            return nullcontext()
        return answer_extractor(self.key)


def answer_format(name: str) -> AnswerFormat:
    if name not in ANSWER_FORMATS:
        raise ConfigError(f"unknown answer format {name!r}: choose one of {list(ANSWER_FORMATS)}")
    return AnswerFormat(name)


# --- loading ----------------------------------------------------------------------------------------


def _field(record: dict, names: tuple[str, ...], chosen: str | None) -> tuple[str | None, Any]:
    if chosen is not None:
        return chosen, record.get(chosen)
    for name in names:
        if name in record and record[name] is not None and str(record[name]).strip():
            return name, record[name]
    return None, None


def _level(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{where}: level {value!r} is not a whole number")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", str(value), flags=re.IGNORECASE)
    if m is None:
        return None  # MATH's "Level ?": unknown level, not an error
    return int(m[1])


def _iter_records(path: Path, split: str | None) -> Iterator[tuple[str, dict]]:
    """(where, record) for every record of a local file or directory."""
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path} is not valid JSON ({exc})") from None
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}: record {i} is not an object")
                yield f"{path} record {i}", row
            return
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path} line {lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path} line {lineno} is not a JSON object")
            yield f"{path} line {lineno}", row
        return
    if path.is_file() and suffix == ".parquet":
        yield from _iter_hf(_load_parquet([path]), str(path))
        return
    if path.is_dir():
        yield from _iter_hf(_load_hf_dir(path, split), str(path))
        return
    if not path.exists():
        raise ConfigError(f"dataset {path} does not exist")
    raise ConfigError(
        f"dataset {path}: unknown kind of file; give a .jsonl / .json file, a .parquet file, "
        "or a local Hugging Face datasets directory"
    )


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "reading parquet files and Hugging Face datasets directories needs the datasets package: "
            "pip install 'ponder[data]'"
        ) from None
    return datasets


def _load_parquet(files: list[Path]) -> Any:
    datasets = _import_datasets()

    try:
        return datasets.Dataset.from_parquet([str(f) for f in files], keep_in_memory=True)
    except Exception as exc:  # a broken or foreign file: say which
        raise ConfigError(f"cannot read parquet {', '.join(map(str, files))} ({exc})") from None


def _load_hf_dir(path: Path, split: str | None) -> Any:
    """A directory written by ``save_to_disk`` (Dataset or DatasetDict), or one of parquet files
    (a Hub snapshot: ``data/<split>-*.parquet``)."""
    datasets = _import_datasets()

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception as exc:
            raise ConfigError(f"cannot load the datasets directory {path} ({exc})") from None
        if isinstance(loaded, datasets.DatasetDict):
            names = sorted(loaded)
            if split is None:
                if len(names) != 1:
                    raise ConfigError(f"dataset {path} has splits {names}: choose one with split=")
                split = names[0]
            if split not in loaded:
                raise ConfigError(f"dataset {path} has no split {split!r}; it has {names}")
            return loaded[split]
        return loaded
    files = sorted(path.rglob("*.parquet"))
    if split is not None:
        files = [f for f in files if f.name.startswith(split) or f.parent.name == split]
    if not files:
        what = f" for split {split!r}" if split else ""
        raise ConfigError(f"dataset directory {path} has no saved dataset and no parquet files{what}")
    return _load_parquet(files)


def _iter_hf(ds: Any, name: str) -> Iterator[tuple[str, dict]]:
    for i, row in enumerate(ds):
        yield f"{name} row {i}", dict(row)


def _detect_format(rows: list[tuple[str, dict, Any, Any]], source: str) -> str:
    questions = [str(q) for _, _, q, _ in rows]
    answers = [str(a) for _, _, _, a in rows if a is not None]

    def chain(q: str) -> bool:
        try:
            parse_question(q)
        except ConfigError:
            return False
        return True

    if answers and all(re.fullmatch(r"\s*\d+\s*", a) for a in answers) and all(chain(q) for q in questions):
        return "arithmetic"
    if answers and all("####" in a for a in answers):
        return "gsm8k"
    if answers and all("\\boxed" in a for a in answers):
        return "math"
    if answers and all(normalize_number(a) is not None for a in answers):
        return "number"
    raise ConfigError(
        f"cannot tell the answer format of {source}: pass answer_format= one of {list(ANSWER_FORMATS)}"
    )


def load_dataset(
    source: str = "builtin",
    split: str | None = None,
    answer_format: str = "auto",
    *,
    n_per_level: int = 20,
    levels: list[int] | tuple[int, ...] | None = None,
    limit: int | None = None,
    seed: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    prompt_template: str = DEFAULT_TEMPLATE,
) -> Dataset:
    """The problems to evaluate on.

    ``source`` is ``"builtin"`` (the built-in task: ``split`` of train/dev/test, ``n_per_level``
    problems of each of ``levels``) or a path: a JSONL / JSON file, a parquet file, or a local
    Hugging Face datasets directory. Records need a question and an answer (the first present of
    :data:`QUESTION_FIELDS` / :data:`ANSWER_FIELDS`, or the fields named); a record without one is a
    ConfigError naming it. ``limit`` keeps the first records.
    """
    if answer_format not in (*ANSWER_FORMATS, "auto"):
        choices = ["auto", *ANSWER_FORMATS]
        raise ConfigError(f"unknown answer format {answer_format!r}: choose one of {choices}")
    if "{question}" not in prompt_template:
        raise ConfigError(f"prompt template {prompt_template!r} has no {{question}} placeholder")
    if source == "builtin":
        if answer_format not in ("auto", "arithmetic"):
            raise ConfigError(f"the built-in task's answers are arithmetic, not {answer_format!r}")
        problems = make_split(split or "test", levels=levels, n_per_level=n_per_level, seed=seed)
        items = tuple(EvalProblem(p.id, p.question, p.prompt, str(p.answer), p.level) for p in problems)
        name = f"builtin:{split or 'test'}"
        return Dataset(name, items[:limit] if limit else items, "arithmetic")

    path = Path(source).expanduser()
    raw: list[tuple[str, dict, Any, Any]] = []
    for where, record in _iter_records(path, split):
        qname, question = _field(record, QUESTION_FIELDS, question_field)
        if question is None or not str(question).strip():
            looked = question_field or ", ".join(QUESTION_FIELDS)
            raise ConfigError(f"{where} has no question (looked for the field(s) {looked})")
        aname, answer = _field(record, ANSWER_FIELDS, answer_field)
        if answer is None or not str(answer).strip():
            looked = answer_field or ", ".join(ANSWER_FIELDS)
            raise ConfigError(f"{where} has no answer (looked for the field(s) {looked})")
        raw.append((where, record, question, answer))
        if limit is not None and len(raw) >= limit:
            break
    if not raw:
        raise ConfigError(f"dataset {path} has no records")
    fmt_name = _detect_format(raw, str(path)) if answer_format == "auto" else answer_format
    fmt = AnswerFormat(fmt_name)
    problems_out: list[EvalProblem] = []
    seen: set[str] = set()
    for i, (where, record, question, answer) in enumerate(raw):
        gold = fmt.gold(answer, where)
        level = _level(record.get("level"), where)
        text = str(question)
        if fmt_name == "arithmetic":
            problem = parse_question(text)
            prompt = problem.prompt
            if str(problem.answer) != gold:
                raise ConfigError(f"{where}: answer {gold} is wrong for {text!r} (it is {problem.answer})")
            level = level if level is not None else problem.level
        else:
            prompt = prompt_template.format(question=text)
        rid = record.get("id", record.get("unique_id"))
        pid = str(rid) if rid is not None else f"{i}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
        if pid in seen:
            raise ConfigError(f"{where}: duplicate id {pid!r}")
        seen.add(pid)
        problems_out.append(EvalProblem(pid, text, prompt, gold, level))
    return Dataset(str(path), tuple(problems_out), fmt_name)


def builtin_levels() -> list[int]:
    return sorted(LEVELS)


@contextmanager
def grading(fmt: AnswerFormat) -> Iterator[Callable[[Hashable | None, str], bool]]:
    """Run strategies under ``fmt`` and yield its grader."""
    with fmt.strategy_context():
        yield fmt.is_correct
