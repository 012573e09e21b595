"""The examples of docs/clients.md, run as they are written.

Every ``python`` block whose info string has a ``title="..."`` runs with this
suite's Python, and every such ``sh`` block with bash, against a fresh router
(release binary, client keys checked) in front of the mock upstream. The
example sees only ``PATH``, ``HOME``, ``ROUTER_URL`` and ``ROUTER_KEY``. The
test checks its exit status and its output against ``EXPECTED`` below. The
``js`` blocks are run by ``node/docs-examples.test.mjs``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CLIENT_KEY, REPO, service

DOC = REPO / "docs" / "clients.md"
HELLO = "Hello from mock upstream primary, all good."
MODELS = ["test-model", "test-embedding", "meta-llama/Llama-3.1-8B"]

# title -> (scenario, strings the output must contain). Scenarios:
#   default  the service "primary" serving MODELS
#   retry    the same with a limit of 1 request per 2 s, its slot taken just before
#   slow     the same, with the upstream's next answer delayed by 5 s
EXPECTED: dict[str, dict[str, tuple[str, list[str]]]] = {
    "python": {
        "chat": ("default", [HELLO]),
        "stream": ("default", [HELLO]),
        "async": ("default", [f"['{HELLO}', '{HELLO}']", HELLO + "\n"]),
        "errors": ("default", ["404 model_not_found"]),
        "retries": ("retry", ["retries: 1", HELLO]),
        "timeout": ("slow", ["no answer within 1 s"]),
        "raw-response": ("default", ["service: primary", "attempts: 1", "request id: checkout-7f3a",
                                     "model: test-model"]),
        "models-embeddings": ("default", ["['meta-llama/Llama-3.1-8B', 'test-embedding', 'test-model']",
                                          "\nmeta-llama/Llama-3.1-8B\n", "2 vectors of 8"]),
    },
    "sh": {
        "curl-chat": ("default", ['"chat.completion"', f'"content": "{HELLO}"']),
        "curl-stream": ("default", ['data: {"id": "chatcmpl-mock', '"content": " good."', "data: [DONE]"]),
        # the list, then the one model (no newline in between: curl prints the bodies as they are)
        "curl-models": ("default", ['"id":"test-embedding"',
                                    '"object":"list"}{"backend_type":"custom","created":1700000000,'
                                    '"id":"meta-llama/Llama-3.1-8B","object":"model"']),
        "curl-embeddings": ("default", ['"object": "embedding"', '"index": 1', '"embedding": [0.5, 0.625,']),
        "curl-headers": ("default", ["HTTP/1.1 200", "x-llm-router-service: primary", "x-llm-router-attempts: 1",
                                     "x-request-id: checkout-7f3a", '"model": "test-model"', HELLO]),
    },
}
# Code blocks in these languages are examples, so each must carry a title.
EXAMPLE_LANGUAGES = {"python", "py", "sh", "bash", "shell", "console", "js", "javascript", "mjs", "ts",
                     "typescript"}

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def doc_blocks() -> list[tuple[str, str | None, str, int]]:
    """Every fenced block of the page: (language, title, code, line)."""
    text = DOC.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        info = m.group(1).strip()
        lang = info.split()[0].lower() if info else ""
        title = re.search(r'\btitle="([^"]+)"', info)
        blocks.append((lang, title.group(1) if title else None, m.group(2), text.count("\n", 0, m.start()) + 1))
    return blocks


def examples(lang: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for block_lang, title, code, _ in doc_blocks():
        if block_lang == lang and title is not None:
            assert title not in found, f"two {lang} examples titled {title!r} in {DOC}"
            found[title] = code
    return found


def test_every_example_is_marked_and_expected():
    untitled = [f"line {line}: ```{lang}" for lang, title, _, line in doc_blocks()
                if lang in EXAMPLE_LANGUAGES and title is None]
    assert not untitled, f"code blocks without a title (so never run) in {DOC}: {untitled}"
    for lang in ("python", "sh"):
        assert set(examples(lang)) == set(EXPECTED[lang]), \
            f"{lang} examples in {DOC} and EXPECTED in {__file__} differ"
    assert examples("js"), "no js examples found (node/docs-examples.test.mjs runs them)"


def post_chat(router) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{router.port}/v1/chat/completions",
        data=b'{"model": "test-model", "messages": [{"role": "user", "content": "take the slot"}]}',
        headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def run_example(lang: str, title: str, mock, start_router, tmp_path: Path) -> None:
    scenario, expected = EXPECTED[lang][title]
    code = examples(lang)[title]
    url = mock.add("primary", models=MODELS)
    fields = {"rate_limit_requests": 1, "rate_limit_window": 2} if scenario == "retry" else {}
    router = start_router([service("primary", url, **fields)])
    if scenario == "retry":
        post_chat(router)
    elif scenario == "slow":
        mock.enqueue("primary", {"kind": "ok", "delay": 5})

    script = tmp_path / ("example.py" if lang == "python" else "example.sh")
    script.write_text(code, encoding="utf-8")
    argv = [sys.executable, str(script)] if lang == "python" else ["bash", "-e", "-o", "pipefail", str(script)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(tmp_path)),
           "ROUTER_URL": f"http://127.0.0.1:{router.port}", "ROUTER_KEY": CLIENT_KEY}
    started = time.monotonic()
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=45)
    elapsed = time.monotonic() - started
    out = done.stdout.replace("\r\n", "\n")
    print(f"---- {lang} example {title!r}: exit {done.returncode} after {elapsed:.2f} s ----\n"
          f"stdout:\n{out}\nstderr:\n{done.stderr}")

    assert done.returncode == 0, f"example {title!r} failed:\n{done.stderr}"
    for piece in expected:
        assert piece in out, f"example {title!r}: {piece!r} not in its output:\n{out}"
    chats = mock.requests("primary", "/chat/completions")
    if scenario == "retry":
        # the first attempt got the router's 429 and never reached the upstream; the retry waited ~2 s
        assert elapsed >= 1.5, f"the SDK retried after {elapsed:.2f} s, before Retry-After"
        assert len(chats) == 2
    if scenario == "slow":
        assert elapsed < 4.5, f"the example gave up after {elapsed:.2f} s"
    # the examples never send the client key upstream
    for rec in chats + mock.requests("primary", "/embeddings"):
        assert rec["headers"].get("authorization") == "Bearer sk-upstream-primary"


@pytest.mark.parametrize("title", list(EXPECTED["python"]))
def test_python_example(title, mock, start_router, tmp_path):
    run_example("python", title, mock, start_router, tmp_path)


@pytest.mark.parametrize("title", list(EXPECTED["sh"]))
def test_curl_example(title, mock, start_router, tmp_path):
    run_example("sh", title, mock, start_router, tmp_path)
