"""Unit tests as a verifier for code answers (HumanEval style): a solution scores 1 when its
program passes the tests, else 0.

The program is the solution's code -- its first fenced code block that defines the entry point
(else its first block, else the whole text) -- preceded by the prompt when the code does not
define the entry point itself (a HumanEval completion continues the prompt's function), or by the
prompt's import lines when it does. Then come the tests, which define ``check(candidate)``, and
the call ``check(<entry point>)``.

Each program runs in a fresh ``python -I`` subprocess in an empty temporary directory, in its own
process group, with limits set before the program starts: address space (``memory_mb``), CPU
seconds, output file size, no core dumps; and a wall-clock ``timeout_s`` after which the whole
group is killed. This contains runaway loops and memory hogs; it is **not** a security sandbox
(the program can still read files and open sockets): run untrusted code inside a container.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import ConfigError
from ponder.verifiers.base import VerifierScore

# Runs in the child before the program: limits first, then the program as __main__.
_BOOT = """
import resource, runpy, sys
path, mem, cpu, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                   (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(res, (value, value))
    except (ValueError, OSError):
        pass
sys.argv = [path]
runpy.run_path(path, run_name="__main__")
"""
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
OUTPUT_LIMIT = 1 << 20  # bytes a program may write to stdout / stderr / files


@dataclass(frozen=True)
class CodeTests:
    """Tests for one prompt: code defining ``check(candidate)``, and the function to pass it
    (None: the last top-level ``def`` of the prompt)."""

    test: str
    entry_point: str | None = None


@dataclass(frozen=True)
class CodeRun:
    status: str  # "passed", "failed", "timeout", "memory" or "no_code"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def extract_code(solution: str, entry_point: str) -> str:
    blocks = _FENCE.findall(solution)
    if not blocks:
        return solution
    for block in blocks:
        if _defines(block, entry_point):
            return block
    return blocks[0]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def entry_point_of(prompt: str) -> str | None:
    names = re.findall(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", prompt, re.M)
    return names[-1] if names else None


def assemble_program(prompt: str, solution: str, tests: CodeTests) -> str:
    """The program one solution is tested as (see the module docstring)."""
    entry = tests.entry_point or entry_point_of(prompt)
    if not entry:
        raise ConfigError(
            f"no entry point for the code tests of {prompt[:60]!r}: the prompt defines no function; "
            "give entry_point="
        )
    code = extract_code(solution, entry)
    if _defines(code, entry):
        imports = [line for line in prompt.splitlines() if re.match(r"(import|from)\s+\w", line)]
        body = "\n".join(imports) + "\n\n" + code
    else:
        body = prompt + code
    return f"{body}\n\n\n{tests.test}\n\n\ncheck({entry})\n"


def run_program(source: str, timeout_s: float, memory_mb: int, python: str = sys.executable) -> CodeRun:
    """Run ``source`` under the limits; passed when it exits with status 0 in time."""
    with tempfile.TemporaryDirectory(prefix="ponder-code-") as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(source)
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "TMPDIR": tmp,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0",
        }
        cpu = max(1, int(timeout_s) + 1)
        args = [python, "-I", "-B", "-c", _BOOT, str(path), str(memory_mb << 20), str(cpu), str(OUTPUT_LIMIT)]
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                args,
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)  # also whatever the program left running
                proc.wait()
        stderr = err_path.read_bytes()[-4000:].decode(errors="replace")
    if timed_out:
        return CodeRun("timeout", f"ran past {timeout_s:g} s")
    if proc.returncode == 0:
        return CodeRun("passed")
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return CodeRun("memory", f"exceeded {memory_mb} MB")
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return CodeRun("timeout", f"used more than {cpu} CPU seconds")
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return CodeRun("failed", last[-1] if last else f"exit status {proc.returncode}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CodeTestVerifier:
    """Runs each solution against its prompt's unit tests (see the module docstring)."""

    def __init__(
        self,
        tests: CodeTests | Mapping[str, CodeTests],
        *,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        workers: int = 2,
        python: str = sys.executable,
    ) -> None:
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ConfigError(f"code test timeout must be > 0 seconds, got {timeout_s!r}")
        if not (isinstance(memory_mb, int) and memory_mb >= 32):
            raise ConfigError(f"code test memory limit must be at least 32 MB, got {memory_mb!r}")
        if not (isinstance(workers, int) and workers >= 1):
            raise ConfigError(f"code test workers must be >= 1, got {workers!r}")
        if not isinstance(tests, CodeTests | Mapping):
            raise ConfigError(f"code tests must be CodeTests or a dict prompt -> CodeTests, got {tests!r}")
        self.tests = tests
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.workers = workers
        self.python = python
        self.last_runs: list[CodeRun] = []
        self.name = "code-tests"

    @property
    def num_params(self) -> int:
        return 0

    def count_tokens(self, prompt: str, solution: str) -> int:
        return 0

    def tests_for(self, prompt: str) -> CodeTests:
        if isinstance(self.tests, CodeTests):
            return self.tests
        if prompt not in self.tests:
            raise ConfigError(f"no code tests for the prompt {prompt[:60]!r}")
        return self.tests[prompt]

    def run(self, prompts: list[str], solutions: list[str]) -> list[CodeRun]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        programs = []
        for p, s in zip(prompts, solutions):
            programs.append(assemble_program(p, s, self.tests_for(p)) if s.strip() else None)

        def one(source: str | None) -> CodeRun:
            if source is None:
                return CodeRun("no_code", "empty solution")
            return run_program(source, self.timeout_s, self.memory_mb, self.python)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            runs = list(pool.map(one, programs))
        self.last_runs = runs
        return runs

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        out = []
        for run in self.run(prompts, solutions):
            value = 1.0 if run.passed else 0.0
            out.append(VerifierScore(step_scores=[value], outcome=value, tokens=0))
        return out
