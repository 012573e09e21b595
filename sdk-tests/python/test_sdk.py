"""The official OpenAI Python SDK against the llm-router release binary.

Every test starts its own router in front of mock upstreams on loopback and
talks to it only through ``openai.OpenAI``: what a user of the SDK sees must be
what they would see talking to an OpenAI-compatible provider directly.
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from conftest import CLIENT_KEY, service
from upstream import embedding_vector, error_body

MODEL = "test-model"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


def one_service(mock, start_router, name="primary", models=(MODEL,), **fields):
    url = mock.add(name, models=list(models))
    return start_router([service(name, url, **fields)])


def wait_for(predicate, limit: float, step: float = 0.05):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


# --------------------------------------------------------------------------- #
# Requests and answers
# --------------------------------------------------------------------------- #


def test_chat_completion(mock, start_router):
    router = one_service(mock, start_router)
    client = router.client()

    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.2, max_tokens=32)

    assert isinstance(resp, openai.types.chat.ChatCompletion)
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "Hello from mock upstream primary, all good."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    [rec] = mock.requests("primary", "/chat/completions")
    assert rec["json"]["messages"] == MESSAGES
    assert rec["json"]["temperature"] == 0.2 and rec["json"]["max_tokens"] == 32
    # the service's own key goes upstream, never the client's
    assert rec["headers"]["authorization"] == "Bearer sk-upstream-primary"
    assert CLIENT_KEY not in json.dumps(rec["headers"])


def test_streaming_text_reassembled(mock, start_router):
    router = one_service(mock, start_router)
    mock.set_default("primary", {"kind": "ok", "content": "The quick brown fox jumps over the lazy dog.",
                                 "chunk_delay": 0.01})
    client = router.client()

    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)

    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps over the lazy dog."
    # role chunk + 9 word chunks + finish chunk, in order, none merged or lost
    assert len(chunks) == 11
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    [rec] = mock.requests("primary", "/chat/completions")
    assert rec["json"]["stream"] is True


def test_stream_options_include_usage(mock, start_router):
    router = one_service(mock, start_router)
    client = router.client()

    chunks = list(client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}))

    *content_chunks, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in content_chunks)
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == \
        "Hello from mock upstream primary, all good."
    [rec] = mock.requests("primary", "/chat/completions")
    assert rec["json"]["stream_options"] == {"include_usage": True}


TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}]


def test_tool_calling_passthrough(mock, start_router):
    router = one_service(mock, start_router)
    client = router.client()

    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False)

    [rec] = mock.requests("primary", "/chat/completions")
    assert rec["json"]["tools"] == TOOLS
    assert rec["json"]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert rec["json"]["parallel_tool_calls"] is False

    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id == "call_mock_1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}

    # the tool result goes back in a second turn, also unchanged
    follow_up = [{"role": "user", "content": "Weather in Paris?"},
                 choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    client.chat.completions.create(model=MODEL, messages=follow_up)
    second = mock.requests("primary", "/chat/completions")[1]
    assert second["json"]["messages"] == follow_up


def test_response_format_json_object(mock, start_router):
    router = one_service(mock, start_router)
    client = router.client()

    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                          response_format={"type": "json_object"})

    [rec] = mock.requests("primary", "/chat/completions")
    assert rec["json"]["response_format"] == {"type": "json_object"}
    assert json.loads(resp.choices[0].message.content) == {
        "answer": "Hello from mock upstream primary, all good.", "upstream": "primary"}


def test_embeddings(mock, start_router):
    router = one_service(mock, start_router, models=("text-embedding-mock",))
    client = router.client()

    # the SDK asks for base64 by default and decodes it itself
    resp = client.embeddings.create(model="text-embedding-mock", input=["first", "second"])
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[0].embedding == embedding_vector(0, 8)
    assert resp.data[1].embedding == embedding_vector(1, 8)
    assert resp.usage.prompt_tokens == 4

    resp = client.embeddings.create(model="text-embedding-mock", input="one", encoding_format="float",
                                    dimensions=4)
    assert resp.data[0].embedding == embedding_vector(0, 4)

    first, second = mock.requests("primary", "/embeddings")
    assert first["json"] == {"model": "text-embedding-mock", "input": ["first", "second"],
                             "encoding_format": "base64"}
    assert second["json"] == {"model": "text-embedding-mock", "input": "one", "encoding_format": "float",
                              "dimensions": 4}


def test_legacy_completions(mock, start_router):
    router = one_service(mock, start_router, models=("gpt-3.5-turbo-instruct",))
    client = router.client()

    resp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=8,
                                     logprobs=2, echo=False)

    assert resp.object == "text_completion"
    assert resp.choices[0].text == "Hello from mock upstream primary, all good."
    assert resp.choices[0].finish_reason == "stop"
    [rec] = mock.requests("primary", "/completions")
    assert rec["json"] == {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 8,
                           "logprobs": 2, "echo": False}

    stream = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == \
        "Hello from mock upstream primary, all good."


def test_models_list_and_retrieve_with_slash(mock, start_router):
    a = mock.add("alpha", models=["meta-llama/Llama-3.1-8B", MODEL])
    b = mock.add("beta", models=["Qwen/Qwen2.5-72B-Instruct", MODEL])
    router = start_router([service("alpha", a, priority=0), service("beta", b, priority=1)])
    client = router.client()

    models = client.models.list()
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(["meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-72B-Instruct", MODEL])
    assert all(m.object == "model" for m in models.data)

    # the SDK percent-encodes the '/' (GET /v1/models/meta-llama%2FLlama-3.1-8B)
    m = client.models.retrieve("meta-llama/Llama-3.1-8B")
    assert m.id == "meta-llama/Llama-3.1-8B"
    assert m.object == "model"
    assert client.models.retrieve("Qwen/Qwen2.5-72B-Instruct").id == "Qwen/Qwen2.5-72B-Instruct"

    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("meta-llama/No-Such-Model")


# --------------------------------------------------------------------------- #
# Errors: the SDK's exception classes
# --------------------------------------------------------------------------- #


def test_400_bad_request_passed_through(mock, start_router):
    a = mock.add("primary")
    b = mock.add("backup")
    body = error_body(400, "Invalid value for 'temperature': must be <= 2.", code="invalid_value",
                      param="temperature")
    mock.set_default("primary", {"kind": "error", "status": 400, "body": body})
    router = start_router([service("primary", a, priority=0), service("backup", b, priority=1)])

    with pytest.raises(openai.BadRequestError) as exc:
        router.client().chat.completions.create(model=MODEL, messages=MESSAGES, temperature=9)

    err = exc.value
    assert err.status_code == 400
    assert err.body == body["error"]  # upstream's error, unchanged
    assert err.code == "invalid_value" and err.param == "temperature"
    assert err.type == "invalid_request_error"
    assert "must be <= 2" in err.message
    # a client error is not failed over
    assert len(mock.requests("primary", "/chat/completions")) == 1
    assert mock.requests("backup", "/chat/completions") == []


def test_401_authentication_error(mock, start_router):
    router = one_service(mock, start_router)

    with pytest.raises(openai.AuthenticationError) as exc:
        router.client(api_key="sk-wrong-key").chat.completions.create(model=MODEL, messages=MESSAGES)

    assert exc.value.status_code == 401
    assert exc.value.type == "authentication_error"
    assert exc.value.code == "invalid_api_key"
    assert "sk-wrong-key" not in str(exc.value.body)
    assert mock.requests("primary", "/chat/completions") == []


def test_404_unknown_model(mock, start_router):
    router = one_service(mock, start_router)

    with pytest.raises(openai.NotFoundError) as exc:
        router.client().chat.completions.create(model="no-such-model", messages=MESSAGES)

    assert exc.value.status_code == 404
    assert exc.value.code == "model_not_found"
    assert exc.value.type == "invalid_request_error"
    assert mock.requests("primary", "/chat/completions") == []


def test_429_rate_limit_error(mock, start_router):
    router = one_service(mock, start_router, rate_limit_requests=1, rate_limit_window=60)
    client = router.client()

    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)

    err = exc.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    retry_after = err.response.headers.get("retry-after")
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    # the rate-limited request never reached the upstream
    assert len(mock.requests("primary", "/chat/completions")) == 1


def test_5xx_internal_server_error(mock, start_router):
    router = one_service(mock, start_router)
    mock.set_default("primary", {"kind": "error", "status": 500,
                                 "body": error_body(500, "upstream exploded (mock)")})

    with pytest.raises(openai.InternalServerError) as exc:
        router.client().chat.completions.create(model=MODEL, messages=MESSAGES)

    err = exc.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == 503
    assert err.code == "service_unavailable"
    assert "upstream exploded (mock)" in err.message  # the last upstream message is kept


# --------------------------------------------------------------------------- #
# Retries, failover, timeouts, headers
# --------------------------------------------------------------------------- #


def test_sdk_retry_honours_router_retry_after(mock, start_router):
    router = one_service(mock, start_router, rate_limit_requests=1, rate_limit_window=2)
    client = router.client(max_retries=1)

    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    elapsed = time.monotonic() - started

    assert raw.parse().choices[0].message.content == "Hello from mock upstream primary, all good."
    assert raw.retries_taken == 1
    assert 1.5 <= elapsed < 10, f"retry after {elapsed:.2f}s; the router's Retry-After should be about 2 s"
    assert len(mock.requests("primary", "/chat/completions")) == 2


def test_failover_is_invisible(mock, start_router):
    a = mock.add("flaky")
    b = mock.add("steady")
    mock.set_default("flaky", {"kind": "error", "status": 500, "body": error_body(500, "flaky is down")})
    router = start_router([service("flaky", a, priority=0), service("steady", b, priority=1)])
    client = router.client()

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    resp = raw.parse()

    assert resp.choices[0].message.content == "Hello from mock upstream steady, all good."
    assert raw.status_code == 200
    assert raw.headers["x-llm-router-service"] == "steady"
    assert raw.headers["x-llm-router-attempts"] == "2"
    assert raw.retries_taken == 0  # the SDK itself did not retry
    assert len(mock.requests("flaky", "/chat/completions")) == 1
    [rec] = mock.requests("steady", "/chat/completions")
    assert rec["json"]["messages"] == MESSAGES

    # streaming fails over the same way
    text = "".join(c.choices[0].delta.content or ""
                   for c in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
                   if c.choices)
    assert text == "Hello from mock upstream steady, all good."


def test_client_timeout_cancels_upstream(mock, start_router):
    router = one_service(mock, start_router)
    mock.enqueue("primary", {"kind": "ok", "delay": 5})
    client = router.client(timeout=1.0, max_retries=0)

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - started < 3

    # the router notices the client left and drops the upstream call (long before the 5 s delay ends)
    def cancelled():
        recs = mock.requests("primary", "/chat/completions")
        return recs and recs[0]["cancelled"]
    assert wait_for(cancelled, 3.0), \
        f"upstream request was not cancelled: {mock.requests('primary', '/chat/completions')}"
    [rec] = mock.requests("primary", "/chat/completions")
    assert rec["cancelled_after"] < 3.5 and not rec["completed"]

    # and the router keeps serving
    assert router.alive()
    resp = router.client().chat.completions.create(model=MODEL, messages=MESSAGES)
    assert resp.choices[0].message.content == "Hello from mock upstream primary, all good."


def test_with_raw_response_headers(mock, start_router):
    router = one_service(mock, start_router)
    client = router.client()

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers["x-llm-router-service"] == "primary"
    assert raw.headers["x-llm-router-attempts"] == "1"
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.content == "Hello from mock upstream primary, all good."

    # streaming responses carry the header too
    with client.chat.completions.with_streaming_response.create(model=MODEL, messages=MESSAGES,
                                                                stream=True) as sresp:
        assert sresp.headers["x-llm-router-service"] == "primary"
        assert sresp.headers["content-type"].startswith("text/event-stream")
        text = "".join(c.choices[0].delta.content or "" for c in sresp.parse() if c.choices)
    assert text == "Hello from mock upstream primary, all good."
