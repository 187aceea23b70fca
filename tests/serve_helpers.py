"""A real ``ponder serve`` process on a free loopback port, for the server tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

INSTANT = "python:ponder.serve.testing:InstantGenerator"
WORDY = "python:serve_helpers:WordyGenerator"
WHERE = "python:serve_helpers:WhereGenerator"
INSTANT_VERIFIER = "python:ponder.serve.testing:InstantVerifier"
# The same with async twins (agenerate, ascore): their searches run on the server's event loop.
ASYNC_INSTANT = "python:ponder.serve.testing:AsyncInstantGenerator"
ASYNC_INSTANT_VERIFIER = "python:ponder.serve.testing:AsyncInstantVerifier"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ponder_command() -> list[str]:
    """The installed ``ponder`` script next to this interpreter, else ``python -m ponder.cli``."""
    script = Path(sys.executable).parent / "ponder"
    if script.exists():
        return [str(script)]
    found = shutil.which("ponder")
    return [found] if found else [sys.executable, "-m", "ponder.cli"]


class ServerProcess:
    """``ponder serve --config FILE --port P`` in a subprocess; its log goes to a file."""

    def __init__(self, config: dict[str, Any], workdir: Path, args: list[str] = (), env: dict | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "serve.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "serve.log"
        full_env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"} | (env or {})
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*ponder_command(), "serve", "--config", str(self.config_path), "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ponder serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ponder serve did not come up in {timeout} s:\n{self.log()}")

    def health(self) -> dict[str, Any]:
        return httpx.get(self.base_url + "/health", timeout=5.0).json()

    def wait_idle(self, timeout: float = 5.0) -> dict[str, Any]:
        """/health once nothing runs or waits (or the last reading when ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.health()
            if (state["running"] == 0 and state["queued"] == 0) or time.monotonic() > deadline:
                return state
            time.sleep(0.05)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class WordyGenerator:
    """A chat-like stub: sample ``s`` writes a different text whose last number is 5, or 7 for every
    third sample, so voting on numbers and voting on whole texts pick different answers."""

    num_params = 0

    def generate(self, prompts, params):
        from ponder.backends.base import Completion

        def one(p: str, s: int) -> Completion:
            text = f"Thinking it over ({s}) ... so the answer is {7 if s % 3 == 0 else 5}."
            return Completion(text, [0] * len(text), [0.0] * len(text), "eos", len(p) + 1)

        return [[one(p, s) for s in range(params.n)] for p in prompts]


class WhereGenerator:
    """An instant generator with an async twin that records which of its methods ran, on which
    thread: where the server ran the search."""

    def __init__(self) -> None:
        from ponder.serve.testing import AsyncInstantGenerator

        self._inner = AsyncInstantGenerator()
        self.num_params = self._inner.num_params
        self.calls: list[tuple[str, str]] = []

    def generate(self, prompts, params):
        self.calls.append(("generate", threading.current_thread().name))
        return self._inner.generate(prompts, params)

    async def agenerate(self, prompts, params):
        self.calls.append(("agenerate", threading.current_thread().name))
        return await self._inner.agenerate(prompts, params)
