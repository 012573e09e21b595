"""A scriptable mock of an OpenAI-compatible provider, for the SDK suites.

One aiohttp server on an ephemeral 127.0.0.1 port hosts any number of mock
*upstreams*, each under its own path prefix: upstream ``alpha`` has the base URL
``http://127.0.0.1:PORT/alpha/v1``, which is what a router service's
``base_url`` points at.

Each upstream serves

* ``GET  /v1/models``            its model list (``models=None`` answers 500);
* ``POST /v1/chat/completions``  JSON, or SSE when ``"stream": true`` (a final
  usage chunk when ``stream_options.include_usage`` is true), ``tool_calls``
  when the request has ``tools``, a JSON object as content when
  ``response_format`` is ``json_object``;
* ``POST /v1/completions``       legacy text completions (JSON or SSE);
* ``POST /v1/embeddings``        float lists, or base64 float32 when
  ``encoding_format`` is ``base64`` (the SDKs' default).

What an upstream does with the next request is scriptable: a default
*behaviour* plus a queue of one-off behaviours consumed in order. A behaviour
is a dict (so it crosses the process boundary as JSON unchanged)::

    {"kind": "ok"}                         # the normal answer (above)
    {"kind": "ok", "content": "hi there"}  # with this assistant text
    {"kind": "error", "status": 400, "body": {...}, "headers": {...}}
    {"kind": "hang"}                       # never answer (until the peer leaves)
    any of them with "delay": seconds      # wait before answering

Every request to an upstream is recorded: method, path below ``/v1``,
lower-cased headers, parsed JSON body, the behaviour used, and whether the
peer (the router) closed the connection before the answer was complete
(``cancelled``, with ``cancelled_after`` seconds since the request arrived).

Use it in-process from Python (:class:`MockServer`, which runs its own event
loop thread) or as a process (``python upstream.py``), which prints
``MOCK_PORT=<port>`` on stdout and is then driven over HTTP by a control API
under ``/_control`` (see :func:`_control_routes`). The process exits when its
standard input closes, so it never outlives the test runner that started it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import signal
import struct
import sys
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

CREATED = 1_700_000_000
HANG_LIMIT = 60.0  # seconds a "hang" lasts at most, so nothing waits forever
POLL = 0.02  # seconds between checks for a closed peer while delaying

_ids = itertools.count(1)


def error_body(status: int, message: str | None = None, type_: str | None = None,
               code: str | None = None, param: str | None = None) -> dict:
    return {
        "error": {
            "message": message or f"mock upstream error {status}",
            "type": type_ or ("invalid_request_error" if status < 500 else "server_error"),
            "code": code,
            "param": param,
        }
    }


class Upstream:
    """State of one mock provider: models, behaviours and the requests it received."""

    def __init__(self, name: str, models: list[str] | None, default: dict | None = None) -> None:
        self.name = name
        self.models = list(models) if models is not None else None
        self.default: dict = dict(default or {"kind": "ok"})
        self.queue: deque[dict] = deque()
        self.requests: list[dict] = []

    def next_behavior(self) -> dict:
        return dict(self.queue.popleft()) if self.queue else dict(self.default)


class MockServer:
    """The aiohttp server hosting every upstream. Thread-safe control methods."""

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}
        self.lock = threading.Lock()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- control (callable from any thread) ------------------------------- #

    def base_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def add(self, name: str, models: list[str] | None = ("test-model",),
            default: dict | None = None) -> str:
        """Create (or replace) upstream ``name``; returns its base URL."""
        with self.lock:
            self.upstreams[name] = Upstream(name, models, default)
        return self.base_url(name)

    def set_default(self, name: str, behavior: dict) -> None:
        with self.lock:
            self.upstreams[name].default = dict(behavior)

    def enqueue(self, name: str, *behaviors: dict) -> None:
        with self.lock:
            self.upstreams[name].queue.extend(dict(b) for b in behaviors)

    def requests(self, name: str, path: str | None = None) -> list[dict]:
        """Copies of what upstream ``name`` received (only ``path`` if given, e.g. "/chat/completions")."""
        with self.lock:
            recs = self.upstreams[name].requests
            return [copy.deepcopy(r) for r in recs if path is None or r["path"] == path]

    def reset(self) -> None:
        with self.lock:
            self.upstreams.clear()

    # ---- lifecycle --------------------------------------------------------- #

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        _control_routes(app, self)
        app.router.add_route("*", "/{upstream}/v1/{tail:.*}", self._handle)
        return app

    async def start_async(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> "MockServer":
        """Run the server on a private event loop in a daemon thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mock-upstream", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start_async(), self._loop).result(10)
        return self

    def stop_thread(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop_async(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop = None

    # ---- the provider side ------------------------------------------------- #

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["upstream"]
        tail = "/" + request.match_info["tail"].rstrip("/")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            up = self.upstreams.get(name)
            if up is None:
                return web.json_response(error_body(404, f"no mock upstream {name!r}", code="not_found"),
                                         status=404)
            behavior = {"kind": "ok"} if request.method == "GET" else up.next_behavior()
            rec = {
                "id": next(_ids),
                "method": request.method,
                "path": tail,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": body,
                "behavior": behavior.get("kind", "ok"),
                "received_at": time.time(),
                "completed": False,
                "cancelled": False,
                "cancelled_after": None,
            }
            up.requests.append(rec)
            models = None if up.models is None else list(up.models)
        started = time.monotonic()

        def mark_cancelled() -> None:
            with self.lock:
                if not rec["completed"] and not rec["cancelled"]:
                    rec["cancelled"] = True
                    rec["cancelled_after"] = round(time.monotonic() - started, 3)

        def peer_gone() -> bool:
            transport = request.transport
            return transport is None or transport.is_closing()

        async def wait(seconds: float) -> bool:
            """Sleep, watching the peer; False when it went away."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if peer_gone():
                    mark_cancelled()
                    return False
                await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
            return True

        try:
            if request.method == "GET" and tail == "/models":
                if models is None:
                    return web.json_response(error_body(500, "model list unavailable"), status=500)
                resp = web.json_response({
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": f"mock-{name}"}
                             for m in models],
                })
            elif request.method == "POST" and tail in ("/chat/completions", "/completions", "/embeddings"):
                kind = behavior.get("kind", "ok")
                if not await wait(float(behavior.get("delay", 0))):
                    raise asyncio.CancelledError
                if kind == "hang":
                    await wait(HANG_LIMIT)
                    raise asyncio.CancelledError
                if kind == "error":
                    status = int(behavior.get("status", 500))
                    resp = web.json_response(behavior.get("body") or error_body(status), status=status,
                                             headers=behavior.get("headers") or {})
                elif isinstance(body, dict) and body.get("stream") is True and tail != "/embeddings":
                    return await self._stream(request, name, tail, body, behavior, rec, wait, mark_cancelled)
                else:
                    resp = web.json_response(_answer(name, tail, body if isinstance(body, dict) else {},
                                                     behavior),
                                             headers=behavior.get("headers") or {})
            else:
                resp = web.json_response(error_body(404, f"mock has no {request.method} {tail}",
                                                    code="unknown_url"), status=404)
            with self.lock:
                rec["completed"] = True
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            mark_cancelled()
            raise

    async def _stream(self, request, name, tail, body, behavior, rec, wait, mark_cancelled):
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache",
                                                       **(behavior.get("headers") or {})})
        await resp.prepare(request)
        for event in _stream_events(name, tail, body, behavior):
            if not await wait(float(behavior.get("chunk_delay", 0))):
                raise asyncio.CancelledError
            await resp.write(b"data: " + event.encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        with self.lock:
            rec["completed"] = True
        return resp


# --------------------------------------------------------------------------- #
# Answers
# --------------------------------------------------------------------------- #


def _content(name: str, behavior: dict) -> str:
    return behavior.get("content") or f"Hello from mock upstream {name}, all good."


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def embedding_vector(index: int, dims: int) -> list[float]:
    """The vector the mock returns for input ``index`` (exactly representable in float32)."""
    return [round((index + 1) * 0.25 + d * 0.125, 3) for d in range(dims)]


def _answer(name: str, tail: str, body: dict, behavior: dict) -> dict:
    model = body.get("model")
    rid = next(_ids)
    if tail == "/embeddings":
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = int(body.get("dimensions") or 8)
        data = []
        for i, _ in enumerate(inputs or []):
            vec = embedding_vector(i, dims)
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    content = _content(name, behavior)
    if tail == "/completions":
        return {
            "id": f"cmpl-mock{rid}", "object": "text_completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "text": content, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(5, len(content.split())),
        }
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    finish = "stop"
    if body.get("tools"):
        fn = body["tools"][0].get("function", {}).get("name", "tool")
        message["content"] = None
        message["tool_calls"] = [{
            "id": "call_mock_1", "type": "function",
            "function": {"name": fn, "arguments": behavior.get("tool_arguments", '{"location": "Paris"}')},
        }]
        finish = "tool_calls"
    elif (body.get("response_format") or {}).get("type") == "json_object":
        message["content"] = json.dumps({"answer": content, "upstream": name})
    return {
        "id": f"chatcmpl-mock{rid}", "object": "chat.completion", "created": CREATED, "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(5, len(content.split())),
    }


def _stream_events(name: str, tail: str, body: dict, behavior: dict) -> list[str]:
    model = body.get("model")
    rid = next(_ids)
    words = _content(name, behavior).split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    usage_field = {"usage": None} if include_usage else {}
    events = []
    if tail == "/completions":
        for p in pieces:
            events.append({"id": f"cmpl-mock{rid}", "object": "text_completion", "created": CREATED,
                           "model": model, "choices": [{"index": 0, "text": p, "logprobs": None,
                                                        "finish_reason": None}], **usage_field})
        events.append({"id": f"cmpl-mock{rid}", "object": "text_completion", "created": CREATED,
                       "model": model, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                    "finish_reason": "stop"}], **usage_field})
        if include_usage:
            events.append({"id": f"cmpl-mock{rid}", "object": "text_completion", "created": CREATED,
                           "model": model, "choices": [], "usage": _usage(5, len(pieces))})
        return [json.dumps(e) for e in events]

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": f"chatcmpl-mock{rid}", "object": "chat.completion.chunk", "created": CREATED,
                "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **usage_field}

    events.append(chunk({"role": "assistant", "content": ""}))
    for p in pieces:
        events.append(chunk({"content": p}))
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({"id": f"chatcmpl-mock{rid}", "object": "chat.completion.chunk", "created": CREATED,
                       "model": model, "system_fingerprint": "fp_mock", "choices": [],
                       "usage": _usage(5, len(pieces))})
    return [json.dumps(e) for e in events]


# --------------------------------------------------------------------------- #
# Control API (for suites in other languages)
# --------------------------------------------------------------------------- #


def _control_routes(app: web.Application, server: MockServer) -> None:
    """
    POST /_control/upstreams        {"name", "models"?: [..]|null, "default"?: behaviour} -> {"base_url"}
    POST /_control/upstreams/{name}/default   behaviour
    POST /_control/upstreams/{name}/queue     {"behaviors": [..]}
    GET  /_control/upstreams/{name}/requests  [?path=/chat/completions] -> [record, ..]
    POST /_control/reset                      forget every upstream
    """

    async def add(request: web.Request) -> web.Response:
        spec = await request.json()
        url = server.add(spec["name"], spec.get("models", ["test-model"]), spec.get("default"))
        return web.json_response({"base_url": url})

    def known(name: str) -> None:
        if name not in server.upstreams:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no upstream {name!r}"}),
                                   content_type="application/json")

    async def set_default(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        known(name)
        server.set_default(name, await request.json())
        return web.json_response({"ok": True})

    async def enqueue(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        known(name)
        server.enqueue(name, *(await request.json()).get("behaviors", []))
        return web.json_response({"ok": True})

    async def requests_(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        known(name)
        return web.json_response(server.requests(name, request.query.get("path")))

    async def reset(request: web.Request) -> web.Response:
        server.reset()
        return web.json_response({"ok": True})

    app.router.add_post("/_control/upstreams", add)
    app.router.add_post("/_control/upstreams/{name}/default", set_default)
    app.router.add_post("/_control/upstreams/{name}/queue", enqueue)
    app.router.add_get("/_control/upstreams/{name}/requests", requests_)
    app.router.add_post("/_control/reset", reset)


# --------------------------------------------------------------------------- #
# As a process
# --------------------------------------------------------------------------- #


async def _main() -> None:
    server = MockServer()
    await server.start_async()
    print(f"MOCK_PORT={server.port}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    # Exit when the parent closes our stdin (or dies).
    loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)))
    await done.wait()
    await server.stop_async()


if __name__ == "__main__":
    asyncio.run(_main())
    # the stdin reader thread may still be blocked; don't wait for it
    sys.stdout.flush()
    import os
    os._exit(0)
