"""The examples of the docs pages, run as they are written.

Every fenced block whose info string has a ``title="..."`` is an example, and
``EXPECTED`` below says how it is run and what it must print:

- ``python`` blocks run with this suite's Python, and shell blocks (``sh``)
  with ``bash -e -o pipefail``, against a fresh router (release binary) in
  front of the mock upstream, set up by the example's *scenario*. The example
  sees ``PATH`` (with ``llm-router`` on it), ``HOME``, ``ROUTER_URL``,
  ``ROUTER_KEY`` and, when the scenario has one, ``ADMIN_KEY``.
- *serve* blocks start the router themselves (``AUTH_KEY=... llm-router``);
  the test gives them ``PORT``, ``HOST`` and ``ROUTER_SERVICES``, waits for
  ``/health``, probes the running router and stops it.
- configuration blocks (``.env`` lines, TOML, a keys file) are validated by the
  release binary's ``llm-router check`` in a temporary directory, with dummy
  values for the variables they refer to. ``.env`` blocks are also sourced by
  bash (``set -a``), since they are shell too.

The ``js`` blocks of docs/clients.md are run by ``node/docs-examples.test.mjs``.
Untitled blocks are output samples; the check and error outputs among them
(``SAMPLES``) are compared with what the binary prints.

An absolute path in an example (``/etc/llm-router/keys.txt``) is replaced by a
file in the test's temporary directory, ``pidof llm-router`` finds the test's
router only, and the Redis host of the examples (``redis.internal:6379``) is
replaced by a closed loopback port: the examples touch nothing else on the
machine and send nothing beyond loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import CLIENT_KEY, KEEP_ENV, REPO, free_port, router_bin, service

DOCS = REPO / "docs"
PAGES = ("clients.md", "configuration.md", "routing.md", "rate-limits.md", "authentication.md")
HELLO = "Hello from mock upstream primary, all good."
MODELS = ["test-model", "test-embedding", "meta-llama/Llama-3.1-8B"]
LLAMA = ["llama3.1-8b"]
CHAT = {"model": "llama3.1-8b", "messages": [{"role": "user", "content": "Hello!"}]}

# a fence may be indented (inside a list item); the code is then dedented by as much
FENCE = re.compile(r"^([ \t]*)```([^\n]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    page: str
    lang: str
    title: str | None
    code: str
    line: int
    index: int  # position among the page's blocks

    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def page_blocks(page: str) -> list[Block]:
    """Every fenced block of the page."""
    text = (DOCS / page).read_text(encoding="utf-8")
    out = []
    for i, m in enumerate(FENCE.finditer(text)):
        indent, info = m.group(1), m.group(2).strip()
        lang = info.split()[0].lower() if info else ""
        title = re.search(r'\btitle="([^"]+)"', info)
        code = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in m.group(3).splitlines(keepends=True))
        out.append(Block(page, lang, title.group(1) if title else None, code,
                         text.count("\n", 0, m.start()) + 1, i))
    return out


def titled(page: str) -> dict[str, Block]:
    """The page's titled blocks, js excluded (the Node suite runs those)."""
    found: dict[str, Block] = {}
    for b in page_blocks(page):
        if b.title is not None and b.lang not in JS_LANGUAGES:
            assert b.title not in found, f"two examples titled {b.title!r} in docs/{page}"
            found[b.title] = b
    return found


def block(page: str, title: str) -> Block:
    return titled(page)[title]


def next_block(b: Block) -> Block:
    """The output sample that follows an example."""
    blocks = page_blocks(b.page)
    assert b.index + 1 < len(blocks), f"no block after {b.where()}"
    after = blocks[b.index + 1]
    assert after.title is None, f"the block after {b.where()} is an example, not an output sample"
    return after


def dotenv(b: Block) -> dict[str, str]:
    """The KEY=value lines of a simple .env block."""
    return dict(line.split("=", 1) for line in b.code.splitlines() if re.match(r"^[A-Z_0-9]+=", line))


# --------------------------------------------------------------------------- #
# What each example must do
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Example:
    how: str  # python | sh | serve | check
    scenario: str = "default"  # python/sh: the router set-up (SCENARIOS); check: dotenv | toml | keys-file
    expect: tuple = ()  # strings the output must contain, or callables (output, ctx)
    env: dict = field(default_factory=dict)  # check/serve: extra variables (dummy secrets, services)
    files: dict = field(default_factory=dict)  # absolute path in the example -> content of the stand-in file
    status: int = 0  # check: the expected exit status


def py(scenario: str, *expect) -> Example:
    return Example("python", scenario, expect)


def sh(scenario: str, *expect) -> Example:
    return Example("sh", scenario, expect)


def serve(*expect, env: dict | None = None) -> Example:
    return Example("serve", "serve", expect, env or {})


def check(use: str, *expect, env: dict | None = None, files: dict | None = None, status: int = 0) -> Example:
    return Example("check", use, expect, env or {}, files or {}, status)


# Expect helpers, resolved when the example runs.

def json_is_next_block(*approximate: str):
    """The output is the JSON of the following sample; keys in ``approximate`` only need a number."""
    def strip(v):
        if isinstance(v, dict):
            return {k: ("<number>" if k in approximate and isinstance(x, (int, float)) else strip(x))
                    for k, x in v.items()}
        return v

    def check_(out: str, ctx: "Ctx") -> None:
        sample = next_block(ctx.block)
        assert strip(json.loads(out)) == strip(json.loads(sample.code)), \
            f"the output differs from the sample at {sample.where()}:\n{out}"
    return check_


def lines_of_next_block(out: str, ctx: "Ctx") -> None:
    sample = next_block(ctx.block)
    for line in sample.code.splitlines():
        if line.strip():
            assert line in out, f"{line!r} of the sample at {sample.where()} is not in the output:\n{out}"


def next_block_verbatim(out: str, ctx: "Ctx") -> None:
    sample = next_block(ctx.block)
    assert sample.code.strip() in out, f"the sample at {sample.where()} is not in the output:\n{out}"


def log_shows(text: str, times: int):
    def check_(out: str, ctx: "Ctx") -> None:
        deadline = time.monotonic() + 5
        while ctx.router.log().count(text) < times and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ctx.router.log().count(text) == times, f"{text!r} is not {times} times in the router's log"
    return check_


def upstream_got_model(name: str, model: str):
    def check_(out: str, ctx: "Ctx") -> None:
        got = [r["json"]["model"] for r in ctx.mock.requests(name, "/chat/completions")]
        assert got == [model], f"{name} received the models {got}"
    return check_


def keys_after_revoke(out: str, ctx: "Ctx") -> None:
    """SIGHUP reloads asynchronously: wait until the old key is refused, then try the new one."""
    deadline = time.monotonic() + 5
    while call(ctx.url + "/v1/models", "sk-old-laptop-5c0d8e2a71f4")[0] != 401:
        assert time.monotonic() < deadline, "the old key is still accepted 5 s after the reload"
        time.sleep(0.05)
    status, body = call(ctx.url + "/v1/models", "sk-old-laptop-5c0d8e2a71f4")
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    assert call(ctx.url + "/v1/models", "sk-new-laptop-a7e3914bd05c")[0] == 200
    assert call(ctx.url + "/v1/models", "sk-team-search-9b2f41c07d5e")[0] == 200


def probe_one_key(out: str, ctx: "Ctx") -> None:
    key = re.search(r"AUTH_KEY=(\S+)", ctx.block.code).group(1)
    status, body = call(ctx.url + "/v1/chat/completions", None, CHAT)
    assert (status, json.loads(body)["error"]["code"]) == (401, "missing_api_key")
    status, body = call(ctx.url + "/v1/chat/completions", "sk-some-other-key-0123456789", CHAT)
    assert (status, json.loads(body)["error"]["code"]) == (401, "invalid_api_key")
    status, body = call(ctx.url + "/v1/chat/completions", key, CHAT)
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == HELLO


def probe_demo_key(out: str, ctx: "Ctx") -> None:
    key = re.search(r"AUTH_KEY=(\S+)", ctx.block.code).group(1)
    assert call(ctx.url + "/v1/models", None)[0] == 401
    assert call(ctx.url + "/v1/models", "sk-some-other-key-0123456789")[0] == 401
    status, body = call(ctx.url + "/v1/models", key)
    assert status == 200 and "demo-chat" in body
    status, body = call(ctx.url + "/v1/chat/completions", key, {**CHAT, "model": "demo-chat"})
    assert status == 200, body
    assert "Client authentication is ON" in ctx.router_output(), ctx.router_output()


# Dummy values for the variables the configuration examples refer to.
SECRETS = {
    "TEAM_A_KEY": "sk-team-a-dummy-0123456789abcdef",
    "ROUTER_ADMIN_KEY": "sk-admin-dummy-0123456789abcdef",
    "REDIS_PASSWORD": "redis-dummy-password-0123456789",
    "CEREBRAS_API_KEY": "csk-dummy-0123456789abcdwxyz",
    "DEEPINFRA_TOKEN": "di-dummy-0123456789abcdwxyz",
    "TEAM_SEARCH_KEY": "sk-team-search-dummy-0123456789",
    "TEAM_SUPPORT_KEY": "sk-team-support-dummy-0123456789",
}
# A service, for the examples that configure none.
ONE_SERVICE = {"OPENAI_API_KEY": "sk-proj-dummy-0123456789abcdwxyz"}
# The environment behind the "Example output" of docs/configuration.md.
CHECK_SAMPLE_ENV = {
    **SECRETS,
    "OPENAI_API_KEY": "sk-proj-dummy-0123456789abcdwxyz",
    "AUTH_KEY_01": "sk-client-one-dummy-0123456789",
    "AUTH_KEY_02": "sk-client-two-dummy-0123456789",
    "ADMIN_KEY": "sk-admin-key-dummy-0123456789",
}
KEYS_FILE = "/etc/llm-router/keys.txt"

# page -> title -> how the example runs and what it must print.
EXPECTED: dict[str, dict[str, Example]] = {
    "clients.md": {
        "chat": py("default", HELLO),
        "stream": py("default", HELLO),
        "async": py("default", f"['{HELLO}', '{HELLO}']", HELLO + "\n"),
        "errors": py("default", "404 model_not_found"),
        "retries": py("retry", "retries: 1", HELLO),
        "timeout": py("slow", "no answer within 1 s"),
        "raw-response": py("default", "service: primary", "attempts: 1", "request id: checkout-7f3a",
                           "model: test-model"),
        "models-embeddings": py("default", "['meta-llama/Llama-3.1-8B', 'test-embedding', 'test-model']",
                                "\nmeta-llama/Llama-3.1-8B\n", "2 vectors of 8"),
        "curl-chat": sh("default", '"chat.completion"', f'"content": "{HELLO}"'),
        "curl-stream": sh("default", 'data: {"id": "chatcmpl-mock', '"content": " good."', "data: [DONE]"),
        # the list, then the one model (no newline in between: curl prints the bodies as they are)
        "curl-models": sh("default", '"id":"test-embedding"',
                          '"object":"list"}{"backend_type":"custom","created":1700000000,'
                          '"id":"meta-llama/Llama-3.1-8B","object":"model"'),
        "curl-embeddings": sh("default", '"object": "embedding"', '"index": 1', '"embedding": [0.5, 0.625,'),
        "curl-headers": sh("default", "HTTP/1.1 200", "x-llm-router-service: primary", "x-llm-router-attempts: 1",
                           "x-request-id: checkout-7f3a", '"model": "test-model"', HELLO),
    },
    "configuration.md": {
        "router-services": check("dotenv", "configuration OK: 2 service(s) from ROUTER_SERVICES",
                                 "1. primary-cerebras [cerebras] priority=0 url=https://api.cerebras.ai/v1",
                                 "rate_limit=100/60s",
                                 "2. fallback-openai [openai] priority=1 url=https://api.openai.com/v1",
                                 "rate_limit=50/60s"),
        "router-toml": check("toml", "configuration OK: 3 service(s) from config file",
                             "1. cerebras [cerebras] priority=0", "timeout=30s rate_limit=30/60s",
                             "2. deepinfra [deepinfra] priority=0", "3. local [ollama] priority=1",
                             "timeout=120s", "listen: 0.0.0.0:8080",
                             "client auth: enabled (1 key(s), header authorization, admin key set, "
                             "per-key limit 60/60s)",
                             "warning: redis at redis://:****@127.0.0.1:", "/0 is unreachable", env=SECRETS),
        # both commands; the first prints the "Example output" below it
        "check": sh("check-files", next_block_verbatim, "configuration OK: 3 service(s) from config file",
                    "listen: 0.0.0.0:8080"),
    },
    "routing.md": {
        "weighted-tiers": check("dotenv", "configuration OK: 3 service(s) from ROUTER_SERVICES",
                                "1. cerebras [cerebras] priority=0", "2. deepinfra [deepinfra] priority=0",
                                "3. openai [openai] priority=1"),
        "health-settings": check("toml", "configuration OK: 1 service(s) from provider variables",
                                 env=ONE_SERVICE),
        "router-health": sh("ejected", '"overall_status":"degraded"', '"ejections":1', '"ejected_until":"20',
                            '"status":"unhealthy"', '"backup":{"backend_type":"custom"'),
        "model-fallback": sh("llama", '"model": "llama3.1-8b"', HELLO,
                             upstream_got_model("primary", "llama3.1-8b")),
        "failover-headers": sh("failover", lines_of_next_block, "Hello from mock upstream backup"),
        "router-stats": sh("failed-over", '"total_requests":1', '"total_failovers":1', '"failover_rate":100.0',
                           '"service_order":["primary","backup"]', '"primary":{"ejection_skips":0,'
                           '"failure_rate":100.0,"failures":1'),
    },
    "rate-limits.md": {
        "router-services": check("dotenv", "configuration OK: 2 service(s) from ROUTER_SERVICES",
                                 "1. cerebras [cerebras] priority=0", "rate_limit=30/60s",
                                 "2. openai [openai] priority=1", "rate_limit=unlimited"),
        "all-limited": sh("limited", "HTTP/1.1 429 Too Many Requests", "content-type: application/json",
                          "retry-after: ", '{"error":{"message":"All services are rate limited; retry after ',
                          '"type":"rate_limit_exceeded","code":"rate_limit_exceeded","param":null}}'),
        "demo-rate-limits": sh("demo", json_is_next_block("window_reset_in")),
    },
    "authentication.md": {
        "one-key": serve(probe_one_key),
        "dotenv-keys": check("dotenv", "client auth: enabled (3 key(s), header authorization, admin key set, "
                                       "per-key limit 120/60s)", env=ONE_SERVICE),
        "auth-toml": check("toml", "client auth: enabled (5 key(s), header authorization, admin key set, "
                                   "per-key limit 120/60s)",
                           env={**SECRETS, **ONE_SERVICE}, files={KEYS_FILE: ("authentication.md", "keys-file")}),
        "keys-file": check("keys-file", "client auth: enabled (3 key(s), header authorization, no admin key)",
                           env=ONE_SERVICE),
        "curl-key": sh("llama", '"object": "chat.completion"', HELLO),
        "curl-x-api-key": sh("x-api-key", '{"data":[{"backend_type":"custom"', '"id":"llama3.1-8b"'),
        "python-key": py("llama", HELLO),
        "python-x-api-key": py("x-api-key", "['llama3.1-8b']"),
        "auth-status": sh("team-keys", json_is_next_block()),
        "reset-metrics": sh("team-keys", json_is_next_block()),
        # the HTTP answer, then both reloads in the log
        "reload-keys": sh("team-keys", json_is_next_block(), log_shows("client keys reloaded", 2)),
        "revoke-key": sh("keys-file", keys_after_revoke),
        "demo-key": serve(probe_demo_key),
    },
}

# Output samples (untitled blocks) that the binary must print as shown. Each is
# found by a piece of its text; ``how`` is "check" (stdout and stderr of
# ``llm-router check`` with ``env``) or "log" (a router's log, started with ``env``).
KEYS_ENV = {"AUTH_KEY_01": "sk-team-search-9b2f41c07d5e", "AUTH_KEY_02": "sk-team-support-e81a6c3349f0",
            "AUTH_KEY_03": "sk-batch-jobs-41d7a0b9c2e6", "ADMIN_KEY": "sk-admin-0c5e7f21a9d84b3e",
            "AUTH_KEY_RATE_LIMIT": "120/60"}
SAMPLES: dict[str, list[tuple[str, str, dict, int]]] = {
    "configuration.md": [
        ("  - ROUTER_SERVICES[0].backend_type", "check", {
            "ROUTER_SERVICES": json.dumps([
                {"name": "a", "backend_type": "telepathy", "base_url": "not a url"},
                {"name": "c", "backend_type": "openai", "base_url": "https://c.example/v1", "rate_limit_window": 0},
                {"name": "b", "backend_type": "openai", "base_url": "https://b.example/v1"},
                {"name": "b", "backend_type": "openai", "base_url": "https://b.example/v1"}]),
            "PORT": "eighty", "AUTH_KEYS_FILE": KEYS_FILE, "AUTH_KEY_RATE_LIMIT": "60",
            "HEALTH_EJECT_MAX_SECONDS": "5", "LOAD_BALANCING": "random",
            "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_FAILURE_MODE": "maybe"}, 1),
        # the "Example output" is checked by the example "check" above it
    ],
    "authentication.md": [
        ("  - AUTH_KEYS_FILE: cannot read", "check", {**ONE_SERVICE, "AUTH_KEYS_FILE": KEYS_FILE}, 1),
        ("  - AUTH_KEY_RATE_LIMIT: `60`", "check", {**ONE_SERVICE, "AUTH_KEY_RATE_LIMIT": "60"}, 1),
        ("client auth: enabled (3 key(s)", "check", {**ONE_SERVICE, **KEYS_ENV}, 0),
        ("client auth: disabled", "check", {**ONE_SERVICE, "ENABLE_AUTH": "false"}, 0),
        ("ENABLE_AUTH is true but no client key is configured", "log", {"AUTH_KEY": ""}, 0),
        ("ADMIN_KEY is not set", "log", {}, 0),
    ],
}
# An untitled block that starts like one of these is a check or error output: it must be in SAMPLES.
SAMPLE_MARKERS = ("error: invalid configuration", "client auth:", "configuration OK")

# Code blocks in these languages are examples, so each must carry a title.
JS_LANGUAGES = {"js", "javascript", "mjs", "ts", "typescript"}
EXAMPLE_LANGUAGES = {"python", "py", "sh", "bash", "shell", "console", "toml", "env", "dotenv"} | JS_LANGUAGES
# ... and so must a block in any language that looks like one.
RUNNABLE = re.compile(r"^\s*(\$ )?(curl |llm-router\b)|ROUTER_SERVICES=|^\[\[services\]\]|^AUTH_KEY\w*=", re.M)
# The languages each way of running accepts.
LANGS = {"python": {"python"}, "sh": {"sh", "bash"}, "serve": {"sh", "bash"},
         ("check", "dotenv"): {"sh", "env", "dotenv"}, ("check", "toml"): {"toml"},
         ("check", "keys-file"): {"text"}}


def test_every_example_is_marked_and_expected():
    problems = []
    for page in PAGES:
        blocks = page_blocks(page)
        for b in blocks:
            if b.title is None and (b.lang in EXAMPLE_LANGUAGES or RUNNABLE.search(b.code)):
                problems.append(f"{b.where()}: ```{b.lang} block without a title (so never run)")
            if b.title is not None and b.lang in JS_LANGUAGES and page != "clients.md":
                problems.append(f"{b.where()}: the Node suite runs only the js examples of docs/clients.md")
        found = titled(page)
        expected = EXPECTED.get(page, {})
        for title in sorted(set(found) - set(expected)):
            problems.append(f"{found[title].where()}: example {title!r} has no entry in EXPECTED")
        for title in sorted(set(expected) - set(found)):
            problems.append(f"docs/{page}: EXPECTED has {title!r}, but the page has no such example")
        for title in sorted(set(found) & set(expected)):
            ex, b = expected[title], found[title]
            langs = LANGS[(ex.how, ex.scenario) if ex.how == "check" else ex.how]
            if b.lang not in langs:
                problems.append(f"{b.where()}: a ```{b.lang} block cannot run as {ex.how} {ex.scenario}")
        needles = [s[0] for s in SAMPLES.get(page, [])]
        for b in blocks:
            if b.title is None and b.code.lstrip().startswith(SAMPLE_MARKERS):
                if not any(n in b.code for n in needles) and b.code.strip() not in samples_of_examples(page):
                    problems.append(f"{b.where()}: output sample not compared with the binary (add it to SAMPLES)")
    assert not EXPECTED.keys() - set(PAGES)
    assert not problems, "\n".join(problems)
    assert any(b.title for b in page_blocks("clients.md") if b.lang == "js"), \
        "no js examples found (node/docs-examples.test.mjs runs them)"


def samples_of_examples(page: str) -> set[str]:
    """Samples that an example compares its output with (``next_block_verbatim`` and the like)."""
    out = set()
    for title, ex in EXPECTED.get(page, {}).items():
        if any(e in (next_block_verbatim, lines_of_next_block) for e in ex.expect):
            out.add(next_block(block(page, title)).code.strip())
    return out


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #

def call(url: str, key: str | None, body: dict | None = None, header: str = "Authorization") -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header(header, f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Ctx:
    """What an example runs against; filled in by its scenario."""

    def __init__(self, block: Block, mock, start_router, tmp: Path) -> None:
        self.block = block
        self.mock = mock
        self.start_router = start_router
        self.tmp = tmp
        self.router = None
        self.url = ""
        self.env: dict[str, str] = {}
        self.upstreams: list[str] = []
        self.after: list[Callable[[float], None]] = []  # checks given the elapsed seconds
        self.serve_log: Path | None = None
        self.paths: dict[str, Path] = {}  # absolute path in the example -> the test's stand-in
        # bin/: llm-router, and a pidof that knows only the test's router
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "llm-router").symlink_to(router_bin())

    def router_output(self) -> str:
        return self.serve_log.read_text(errors="replace") if self.serve_log else self.router.log()

    def use_router(self, router) -> None:
        self.router = router
        self.url = f"http://127.0.0.1:{router.port}"
        self.env["ROUTER_URL"] = self.url
        self.pidof(router.proc.pid)

    def pidof(self, pid: int) -> None:
        shim = self.bin / "pidof"
        shim.write_text('#!/bin/sh\n[ "$*" = llm-router ] && { echo %d; exit 0; }\n'
                        'echo "pidof (docs tests): only \\"pidof llm-router\\" is supported" >&2; exit 1\n' % pid)
        shim.chmod(0o755)

    def base_env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": os.environ.get("HOME", str(self.tmp))}

    def stand_ins(self, code: str, files: dict) -> str:
        """Writes the stand-in files (content, or (page, title) of a block) and points the code at them;
        replaces the example's hosts by loopback."""
        code = loopback(code)
        for i, (path, content) in enumerate(files.items()):
            if isinstance(content, tuple):
                content = block(*content).code
            local = self.tmp / f"stand-in{i}-{Path(path).name}"
            local.write_text(content, encoding="utf-8")
            self.paths[path] = local
        for path, local in self.paths.items():
            code = code.replace(path, str(local))
        return code


def loopback(code: str) -> str:
    """The examples' Redis host becomes a free (so closed) loopback port: check reports it unreachable."""
    return code.replace("redis.internal:6379", f"127.0.0.1:{free_port()}")


def mock_service(ctx: Ctx, name: str, models: list[str], **fields) -> dict:
    url = ctx.mock.add(name, models=models)
    ctx.upstreams.append(name)
    return service(name, url, **fields)


def chat_once(ctx: Ctx) -> None:
    status, body = call(ctx.url + "/v1/chat/completions", CLIENT_KEY, CHAT)
    assert status == 200, body


def sc_default(ctx: Ctx, models=MODELS, **env) -> None:
    ctx.use_router(ctx.start_router([mock_service(ctx, "primary", models)], **env))
    ctx.env["ROUTER_KEY"] = CLIENT_KEY


def sc_retry(ctx: Ctx) -> None:
    ctx.use_router(ctx.start_router([mock_service(ctx, "primary", MODELS, rate_limit_requests=1,
                                                  rate_limit_window=2)]))
    ctx.env["ROUTER_KEY"] = CLIENT_KEY
    status, body = call(ctx.url + "/v1/chat/completions", CLIENT_KEY, {**CHAT, "model": "test-model"})
    assert status == 200, body

    def after(elapsed: float) -> None:
        # the first attempt got the router's 429 and never reached the upstream; the retry waited ~2 s
        assert elapsed >= 1.5, f"the SDK retried after {elapsed:.2f} s, before Retry-After"
        assert len(ctx.mock.requests("primary", "/chat/completions")) == 2
    ctx.after.append(after)


def sc_slow(ctx: Ctx) -> None:
    sc_default(ctx)
    ctx.mock.enqueue("primary", {"kind": "ok", "delay": 5})

    def after(elapsed: float) -> None:
        assert elapsed < 4.5, f"the example gave up after {elapsed:.2f} s"
    ctx.after.append(after)


def sc_failover(ctx: Ctx, calls_before: int = 0) -> None:
    """primary (priority 0) answers 500, backup (priority 1) answers; ``calls_before`` requests already made."""
    primary = mock_service(ctx, "primary", LLAMA)
    ctx.mock.set_default("primary", {"kind": "error", "status": 500})
    ctx.use_router(ctx.start_router([primary, mock_service(ctx, "backup", LLAMA, priority=1)]))
    ctx.env["ROUTER_KEY"] = CLIENT_KEY
    for _ in range(calls_before):
        chat_once(ctx)


def sc_limited(ctx: Ctx) -> None:
    ctx.use_router(ctx.start_router([mock_service(ctx, "primary", LLAMA, rate_limit_requests=1,
                                                  rate_limit_window=5)]))
    ctx.env["ROUTER_KEY"] = CLIENT_KEY
    chat_once(ctx)


def sc_team_keys(ctx: Ctx) -> None:
    """The .env example of docs/authentication.md as the router's .env."""
    env_block = block("authentication.md", "dotenv-keys")
    keys = dotenv(env_block)
    ctx.use_router(ctx.start_router([mock_service(ctx, "primary", LLAMA)], files={".env": env_block.code},
                                    AUTH_KEY=""))
    ctx.env["ROUTER_KEY"] = keys["AUTH_KEY_01"]
    ctx.env["ADMIN_KEY"] = keys["ADMIN_KEY"]


def sc_keys_file(ctx: Ctx) -> None:
    """A router reading its keys from the file that the revoke example edits."""
    keys = ctx.tmp / "keys.txt"
    keys.write_text("sk-team-search-9b2f41c07d5e\nsk-old-laptop-5c0d8e2a71f4\n", encoding="utf-8")
    ctx.paths[KEYS_FILE] = keys
    ctx.use_router(ctx.start_router([mock_service(ctx, "primary", LLAMA)], AUTH_KEY="", AUTH_KEYS_FILE=str(keys)))
    ctx.env["ROUTER_KEY"] = "sk-team-search-9b2f41c07d5e"


def sc_demo(ctx: Ctx) -> None:
    """``llm-router demo`` with no client key, as a reader would start it."""
    ctx.use_router(ctx.start_router([], args=("demo",), AUTH_KEY=""))


def sc_check_files(ctx: Ctx) -> None:
    """No router: the TOML example of docs/configuration.md as router.toml, and the variables of the sample."""
    (ctx.tmp / "router.toml").write_text(loopback(block("configuration.md", "router-toml").code),
                                         encoding="utf-8")
    ctx.env.update(CHECK_SAMPLE_ENV)


SCENARIOS: dict[str, Callable[[Ctx], None]] = {
    "default": sc_default,
    "retry": sc_retry,
    "slow": sc_slow,
    "llama": lambda ctx: sc_default(ctx, LLAMA),
    "x-api-key": lambda ctx: sc_default(ctx, LLAMA, AUTH_HEADER_NAME="X-API-Key"),
    "failover": sc_failover,
    "failed-over": lambda ctx: sc_failover(ctx, 1),
    "ejected": lambda ctx: sc_failover(ctx, 3),  # HEALTH_FAILURE_THRESHOLD is 3
    "limited": sc_limited,
    "team-keys": sc_team_keys,
    "keys-file": sc_keys_file,
    "demo": sc_demo,
    "check-files": sc_check_files,
}


def check_output(out: str, expect: tuple, ctx: Ctx, what: str) -> None:
    for piece in expect:
        if callable(piece):
            piece(out, ctx)
        else:
            assert piece in out, f"{what}: {piece!r} not in its output:\n{out}"


def run_script(ctx: Ctx, ex: Example, code: str) -> None:
    b = ctx.block
    if ex.how == "python":
        script = ctx.tmp / "example.py"
        argv = [sys.executable, str(script)]
    else:
        script = ctx.tmp / "example.sh"
        argv = ["bash", "-e", "-o", "pipefail", str(script)]
    script.write_text(code, encoding="utf-8")
    env = {**ctx.base_env(), **ctx.env}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ctx.tmp, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=45)
    elapsed = time.monotonic() - started
    out = done.stdout.replace("\r\n", "\n")
    print(f"---- {b.where()} example {b.title!r}: exit {done.returncode} after {elapsed:.2f} s ----\n"
          f"stdout:\n{out}\nstderr:\n{done.stderr}")
    assert done.returncode == 0, f"example {b.title!r} failed:\n{done.stderr}"
    check_output(out, ex.expect, ctx, f"example {b.title!r}")
    for after in ctx.after:
        after(elapsed)


def run_check(ctx: Ctx, ex: Example, code: str) -> None:
    """``llm-router check`` on a configuration example."""
    b = ctx.block
    env = {**ctx.base_env(), **ex.env}
    runs = []  # (what, argv, cwd, env)
    if ex.scenario == "dotenv":
        as_file = ctx.tmp / "dotenv"
        as_file.mkdir()
        (as_file / ".env").write_text(code, encoding="utf-8")
        runs.append((".env", [router_bin(), "check"], as_file, env))
        sourced = ctx.tmp / "sourced"
        sourced.mkdir()
        (sourced / "example.sh").write_text(code, encoding="utf-8")
        runs.append(("sourced by bash", ["bash", "-e", "-c", "set -a; . ./example.sh; set +a; exec llm-router check"],
                     sourced, env))
    elif ex.scenario == "toml":
        (ctx.tmp / "router.toml").write_text(code, encoding="utf-8")
        runs.append(("router.toml", [router_bin(), "--config", "router.toml", "check"], ctx.tmp, env))
    elif ex.scenario == "keys-file":
        (ctx.tmp / "keys.txt").write_text(code, encoding="utf-8")
        runs.append(("keys file", [router_bin(), "check"], ctx.tmp, {**env, "AUTH_KEYS_FILE": "keys.txt"}))
    else:
        raise AssertionError(f"unknown check {ex.scenario!r}")

    # what must never be printed: the secrets given, and the keys in the example
    secrets = [v for k, v in ex.env.items() if re.search(r"KEY|TOKEN|PASSWORD", k) and len(v) >= 8]
    secrets += [v for k, v in dotenv(b).items() if re.search(r"KEY", k) and len(v) >= 8]
    if ex.scenario == "keys-file":
        secrets += [line.strip() for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for what, argv, cwd, run_env in runs:
        done = subprocess.run(argv, cwd=cwd, env=run_env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        out = done.stdout + done.stderr
        print(f"---- {b.where()} example {b.title!r} ({what}): exit {done.returncode} ----\n{out}")
        assert done.returncode == ex.status, f"example {b.title!r} ({what}): exit {done.returncode}:\n{out}"
        check_output(out, ex.expect, ctx, f"example {b.title!r} ({what})")
        for s in secrets:
            assert s not in out, f"example {b.title!r} ({what}): check printed a secret"


def run_serve(ctx: Ctx, ex: Example, code: str) -> None:
    """The block starts the router itself: give it an address and a service, probe it, stop it."""
    b = ctx.block
    port = free_port()
    env = {**ctx.base_env(), **ex.env, "HOST": "127.0.0.1", "PORT": str(port), "SHUTDOWN_GRACE_PERIOD": "1",
           "ROUTER_SERVICES": json.dumps([mock_service(ctx, "primary", LLAMA)])}
    script = ctx.tmp / "example.sh"
    script.write_text(code, encoding="utf-8")
    ctx.serve_log = ctx.tmp / "serve.log"
    ctx.url = f"http://127.0.0.1:{port}"
    with open(ctx.serve_log, "wb") as log:
        proc = subprocess.Popen(["bash", "-e", str(script)], cwd=ctx.tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"example {b.title!r} exited:\n{ctx.router_output()}"
            assert time.monotonic() < deadline, f"example {b.title!r}: no /health:\n{ctx.router_output()}"
            try:
                if call(ctx.url + "/health", None)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        check_output(ctx.router_output(), ex.expect, ctx, f"example {b.title!r}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the example's own process group
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        print(f"---- {b.where()} example {b.title!r}: output ----\n{ctx.router_output()[-8000:]}")


ALL = [(page, title) for page in PAGES for title in EXPECTED.get(page, {})]


@pytest.mark.parametrize("page,title", ALL, ids=[f"{p}:{t}" for p, t in ALL])
def test_docs_example(page, title, mock, start_router, tmp_path):
    ex = EXPECTED[page][title]
    b = block(page, title)
    ctx = Ctx(b, mock, start_router, tmp_path)
    if ex.how in ("python", "sh"):
        SCENARIOS[ex.scenario](ctx)
    code = ctx.stand_ins(b.code, ex.files)
    if ex.how == "check":
        run_check(ctx, ex, code)
    elif ex.how == "serve":
        run_serve(ctx, ex, code)
    else:
        run_script(ctx, ex, code)
    # the examples never send the client key upstream
    for name in ctx.upstreams:
        for rec in ctx.mock.requests(name):
            if rec["path"] != "/models":
                assert rec["headers"].get("authorization") == f"Bearer sk-upstream-{name}"


SAMPLE_CASES = [(page, needle, how, env, status) for page, rows in SAMPLES.items()
                for needle, how, env, status in rows]


@pytest.mark.parametrize("page,needle,how,env,status", SAMPLE_CASES,
                         ids=[f"{c[0]}:{c[1].strip()[:32]}" for c in SAMPLE_CASES])
def test_output_sample(page, needle, how, env, status, mock, start_router, tmp_path):
    matches = [b for b in page_blocks(page) if b.title is None and needle in b.code]
    assert len(matches) == 1, f"{len(matches)} untitled blocks of docs/{page} contain {needle!r}"
    sample = matches[0]
    if how == "check":
        if env.get("AUTH_KEYS_FILE") == KEYS_FILE and Path(KEYS_FILE).exists():
            pytest.skip(f"{KEYS_FILE} exists on this machine")
        run_env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
        run_env.update(env)
        done = subprocess.run([router_bin(), "check"], cwd=tmp_path, env=run_env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)
        out = done.stdout + done.stderr
        assert done.returncode == status, f"exit {done.returncode}:\n{out}"
        assert sample.code.strip() in out, f"the sample at {sample.where()} is not what check prints:\n{out}"
    else:
        router = start_router([service("primary", mock.add("primary", models=LLAMA))], **env)
        router.stop()
        log = router.log()
        for line in sample.code.strip().splitlines():
            assert line.strip() in log, f"{line!r} of the sample at {sample.where()} is not in the log:\n{log}"
