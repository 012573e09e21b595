"""Fixtures for the Python SDK suite: one mock upstream server per session, and
a fresh router process per test, started from the release binary."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "mock"))

from upstream import MockServer  # noqa: E402

CLIENT_KEY = "sk-sdk-tests-client-key-0123456789"
# Only these variables of ours reach the router, so a stray OPENAI_API_KEY or
# AUTH_KEY on the machine cannot change its configuration.
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "RUST_BACKTRACE")


def router_bin() -> str:
    path = Path(os.environ.get("LLM_ROUTER_BIN") or REPO / "target" / "release" / "llm-router")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(f"router binary not found or not executable: {path} "
                    "(build it with `cargo build --release` or set LLM_ROUTER_BIN)", returncode=2)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service(name: str, base_url: str, **fields) -> dict:
    """A ROUTER_SERVICES element for a mock upstream."""
    return {"name": name, "backend_type": "custom", "base_url": base_url,
            "api_key": f"sk-upstream-{name}", **fields}


class Router:
    def __init__(self, services: list[dict], workdir: Path, args: tuple[str, ...] = (),
                 files: dict[str, str] | None = None, **env: str) -> None:
        self.services = services
        self.workdir = workdir
        self.args = tuple(args)  # e.g. ("demo",)
        self.files = dict(files or {})  # written into the working directory, e.g. {".env": "..."}
        self.log_path = workdir / "router.log"
        self.extra_env = {k: str(v) for k, v in env.items()}
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kw) -> openai.OpenAI:
        kw.setdefault("api_key", CLIENT_KEY)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=self.base_url, **kw)

    def start(self) -> "Router":
        for name, text in self.files.items():
            (self.workdir / name).write_text(text, encoding="utf-8")
        for attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
            env.update({
                "ROUTER_SERVICES": json.dumps(self.services),
                "AUTH_KEY": CLIENT_KEY,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "REQUEST_TIMEOUT": "15",
                "SHUTDOWN_GRACE_PERIOD": "1",
                "LOG_LEVEL": "info",
            })
            env.update(self.extra_env)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([router_bin(), *self.args], cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_healthy(10.0):
                return self
            self.stop()
            if attempt == 2 or "in use" not in self.log():
                break
        raise RuntimeError(f"router did not become healthy; its output:\n{self.log()}")

    def _wait_healthy(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture(scope="session")
def mock_server():
    server = MockServer().start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def mock(mock_server):
    """The mock server, emptied for this test. ``mock.add(name)`` returns a base URL."""
    mock_server.reset()
    yield mock_server
    # shown by pytest only when the test failed
    for name in list(mock_server.upstreams):
        for r in mock_server.requests(name):
            print(f"mock {name}: {r['method']} {r['path']} behavior={r['behavior']} "
                  f"completed={r['completed']} cancelled={r['cancelled']} body={json.dumps(r['json'])[:300]}")
    mock_server.reset()


@pytest.fixture
def start_router(tmp_path):
    """``start_router([service(...), ...], **env)`` starts the release binary; stopped after the test.
    ``args=("demo",)`` adds command-line arguments, ``files={".env": text}`` writes files into its
    working directory first."""
    started: list[Router] = []

    def start(services: list[dict], *, args: tuple[str, ...] = (), files: dict[str, str] | None = None,
              **env) -> Router:
        workdir = tmp_path / f"router{len(started)}"
        workdir.mkdir()
        r = Router(services, workdir, args=args, files=files, **env)
        started.append(r)
        return r.start()

    yield start
    for r in started:
        r.stop()
        # shown by pytest only when the test failed
        print(f"---- router on port {r.port} ----\n{r.log()[-8000:]}")
