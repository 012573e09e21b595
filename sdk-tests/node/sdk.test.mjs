// The official OpenAI Node SDK against the llm-router release binary.
//
// Every test starts its own router in front of mock upstreams on loopback and
// talks to it only through `new OpenAI(...)`: what a user of the SDK sees must
// be what they would see talking to an OpenAI-compatible provider directly.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { CLIENT_KEY, Mock, service, waitFor, withRouters } from './harness.mjs';

const MODEL = 'test-model';
const MESSAGES = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say hello.' },
];
const T = { timeout: 60_000 };
const hello = (name) => `Hello from mock upstream ${name}, all good.`;

function errorBody(status, message, { type, code = null, param = null } = {}) {
  return {
    error: {
      message,
      type: type ?? (status < 500 ? 'invalid_request_error' : 'server_error'),
      code,
      param,
    },
  };
}

// the vector the mock returns for input `index` (see embedding_vector in mock/upstream.py)
function embeddingVector(index, dims) {
  return Array.from({ length: dims }, (_, d) => Math.round(((index + 1) * 0.25 + d * 0.125) * 1000) / 1000);
}

async function expectError(promise, cls) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
    return err;
  }
  assert.fail(`expected ${cls.name}, but the call succeeded`);
}

describe('OpenAI Node SDK through llm-router', () => {
  let mock;

  before(async () => {
    mock = await Mock.start();
  });
  after(async () => {
    await mock?.stop();
  });
  afterEach(async () => {
    await mock.reset();
  });

  async function oneService(start, { name = 'primary', models = [MODEL], fields = {} } = {}) {
    const url = await mock.add(name, { models });
    return start([service(name, url, fields)]);
  }

  // -------------------------------------------------------------------------
  // Requests and answers
  // -------------------------------------------------------------------------

  test('chat completion', T, withRouters(async (start) => {
    const router = await oneService(start);
    const resp = await router.client().chat.completions.create({
      model: MODEL, messages: MESSAGES, temperature: 0.2, max_tokens: 32,
    });

    assert.equal(resp.object, 'chat.completion');
    assert.equal(resp.model, MODEL);
    assert.equal(resp.choices[0].message.role, 'assistant');
    assert.equal(resp.choices[0].message.content, hello('primary'));
    assert.equal(resp.choices[0].finish_reason, 'stop');
    assert.equal(resp.usage.total_tokens, resp.usage.prompt_tokens + resp.usage.completion_tokens);

    const [rec, ...rest] = await mock.requests('primary', '/chat/completions');
    assert.equal(rest.length, 0);
    assert.deepEqual(rec.json.messages, MESSAGES);
    assert.equal(rec.json.temperature, 0.2);
    assert.equal(rec.json.max_tokens, 32);
    assert.equal(rec.headers.authorization, 'Bearer sk-upstream-primary');
    assert.ok(!JSON.stringify(rec.headers).includes(CLIENT_KEY));
  }));

  test('streaming, text reassembled', T, withRouters(async (start) => {
    const router = await oneService(start);
    await mock.setDefault('primary', {
      kind: 'ok', content: 'The quick brown fox jumps over the lazy dog.', chunk_delay: 0.01,
    });

    const stream = await router.client().chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'The quick brown fox jumps over the lazy dog.');
    assert.equal(chunks.length, 11); // role + 9 words + finish, none merged or lost
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    const [rec] = await mock.requests('primary', '/chat/completions');
    assert.equal(rec.json.stream, true);
  }));

  test('stream_options.include_usage: usage chunk passed through', T, withRouters(async (start) => {
    const router = await oneService(start);
    const stream = await router.client().chat.completions.create({
      model: MODEL, messages: MESSAGES, stream: true, stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.prompt_tokens, 5);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
    assert.equal(chunks.slice(0, -1).map((c) => c.choices[0]?.delta?.content ?? '').join(''), hello('primary'));
    const [rec] = await mock.requests('primary', '/chat/completions');
    assert.deepEqual(rec.json.stream_options, { include_usage: true });
  }));

  const TOOLS = [{
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather for a city',
      parameters: {
        type: 'object',
        properties: { location: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
        required: ['location'],
        additionalProperties: false,
      },
      strict: true,
    },
  }];

  test('tool calling: tools passed through, tool_calls returned', T, withRouters(async (start) => {
    const router = await oneService(start);
    const client = router.client();
    const toolChoice = { type: 'function', function: { name: 'get_weather' } };

    const resp = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: TOOLS, tool_choice: toolChoice, parallel_tool_calls: false,
    });

    const [rec] = await mock.requests('primary', '/chat/completions');
    assert.deepEqual(rec.json.tools, TOOLS);
    assert.deepEqual(rec.json.tool_choice, toolChoice);
    assert.equal(rec.json.parallel_tool_calls, false);

    const choice = resp.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.id, 'call_mock_1');
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { location: 'Paris' });

    // the tool result goes back in a second turn, also unchanged
    const followUp = [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: choice.message.tool_calls },
      { role: 'tool', tool_call_id: call.id, content: '{"temp_c": 21}' },
    ];
    await client.chat.completions.create({ model: MODEL, messages: followUp });
    const second = (await mock.requests('primary', '/chat/completions'))[1];
    assert.deepEqual(second.json.messages, followUp);
  }));

  test('response_format json_object passed through', T, withRouters(async (start) => {
    const router = await oneService(start);
    const resp = await router.client().chat.completions.create({
      model: MODEL, messages: MESSAGES, response_format: { type: 'json_object' },
    });

    const [rec] = await mock.requests('primary', '/chat/completions');
    assert.deepEqual(rec.json.response_format, { type: 'json_object' });
    assert.deepEqual(JSON.parse(resp.choices[0].message.content), { answer: hello('primary'), upstream: 'primary' });
  }));

  test('embeddings', T, withRouters(async (start) => {
    const router = await oneService(start, { models: ['text-embedding-mock'] });
    const client = router.client();

    // the SDK asks for base64 by default and decodes it itself
    let resp = await client.embeddings.create({ model: 'text-embedding-mock', input: ['first', 'second'] });
    assert.deepEqual(resp.data.map((d) => d.index), [0, 1]);
    assert.deepEqual(resp.data[0].embedding, embeddingVector(0, 8));
    assert.deepEqual(resp.data[1].embedding, embeddingVector(1, 8));
    assert.equal(resp.usage.prompt_tokens, 4);

    resp = await client.embeddings.create({
      model: 'text-embedding-mock', input: 'one', encoding_format: 'float', dimensions: 4,
    });
    assert.deepEqual(resp.data[0].embedding, embeddingVector(0, 4));

    const [first, second] = await mock.requests('primary', '/embeddings');
    assert.deepEqual(first.json, { model: 'text-embedding-mock', input: ['first', 'second'], encoding_format: 'base64' });
    assert.deepEqual(second.json, { model: 'text-embedding-mock', input: 'one', encoding_format: 'float', dimensions: 4 });
  }));

  test('legacy completions', T, withRouters(async (start) => {
    const router = await oneService(start, { models: ['gpt-3.5-turbo-instruct'] });
    const client = router.client();

    const resp = await client.completions.create({
      model: 'gpt-3.5-turbo-instruct', prompt: 'Once upon a time', max_tokens: 8, logprobs: 2, echo: false,
    });
    assert.equal(resp.object, 'text_completion');
    assert.equal(resp.choices[0].text, hello('primary'));
    assert.equal(resp.choices[0].finish_reason, 'stop');
    const [rec] = await mock.requests('primary', '/completions');
    assert.deepEqual(rec.json, {
      model: 'gpt-3.5-turbo-instruct', prompt: 'Once upon a time', max_tokens: 8, logprobs: 2, echo: false,
    });

    const stream = await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'Once', stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.text ?? '';
    assert.equal(text, hello('primary'));
  }));

  test("models.list() and models.retrieve() with '/' in the id", T, withRouters(async (start) => {
    const a = await mock.add('alpha', { models: ['meta-llama/Llama-3.1-8B', MODEL] });
    const b = await mock.add('beta', { models: ['Qwen/Qwen2.5-72B-Instruct', MODEL] });
    const router = await start([service('alpha', a, { priority: 0 }), service('beta', b, { priority: 1 })]);
    const client = router.client();

    const ids = [];
    for await (const m of client.models.list()) {
      assert.equal(m.object, 'model');
      ids.push(m.id);
    }
    assert.deepEqual(ids.sort(), ['Qwen/Qwen2.5-72B-Instruct', 'meta-llama/Llama-3.1-8B', MODEL].sort());

    const m = await client.models.retrieve('meta-llama/Llama-3.1-8B');
    assert.equal(m.id, 'meta-llama/Llama-3.1-8B');
    assert.equal(m.object, 'model');
    assert.equal((await client.models.retrieve('Qwen/Qwen2.5-72B-Instruct')).id, 'Qwen/Qwen2.5-72B-Instruct');
    await expectError(client.models.retrieve('meta-llama/No-Such-Model'), OpenAI.NotFoundError);
  }));

  // -------------------------------------------------------------------------
  // Errors: the SDK's exception classes
  // -------------------------------------------------------------------------

  test('400 → BadRequestError, upstream error passed through unchanged', T, withRouters(async (start) => {
    const a = await mock.add('primary');
    const b = await mock.add('backup');
    const body = errorBody(400, "Invalid value for 'temperature': must be <= 2.",
      { code: 'invalid_value', param: 'temperature' });
    await mock.setDefault('primary', { kind: 'error', status: 400, body });
    const router = await start([service('primary', a, { priority: 0 }), service('backup', b, { priority: 1 })]);

    const err = await expectError(
      router.client().chat.completions.create({ model: MODEL, messages: MESSAGES, temperature: 9 }),
      OpenAI.BadRequestError);
    assert.equal(err.status, 400);
    assert.deepEqual(err.error, body.error);
    assert.equal(err.code, 'invalid_value');
    assert.equal(err.param, 'temperature');
    assert.equal(err.type, 'invalid_request_error');
    assert.match(err.message, /must be <= 2/);
    assert.equal((await mock.requests('primary', '/chat/completions')).length, 1);
    assert.deepEqual(await mock.requests('backup', '/chat/completions'), []);
  }));

  test('401 → AuthenticationError (wrong client key)', T, withRouters(async (start) => {
    const router = await oneService(start);
    const err = await expectError(
      router.client({ apiKey: 'sk-wrong-key' }).chat.completions.create({ model: MODEL, messages: MESSAGES }),
      OpenAI.AuthenticationError);
    assert.equal(err.status, 401);
    assert.equal(err.type, 'authentication_error');
    assert.equal(err.code, 'invalid_api_key');
    assert.ok(!JSON.stringify(err.error).includes('sk-wrong-key'));
    assert.deepEqual(await mock.requests('primary', '/chat/completions'), []);
  }));

  test('404 → NotFoundError (unknown model)', T, withRouters(async (start) => {
    const router = await oneService(start);
    const err = await expectError(
      router.client().chat.completions.create({ model: 'no-such-model', messages: MESSAGES }),
      OpenAI.NotFoundError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.type, 'invalid_request_error');
    assert.deepEqual(await mock.requests('primary', '/chat/completions'), []);
  }));

  test('429 → RateLimitError with Retry-After', T, withRouters(async (start) => {
    const router = await oneService(start, { fields: { rate_limit_requests: 1, rate_limit_window: 60 } });
    const client = router.client();

    await client.chat.completions.create({ model: MODEL, messages: MESSAGES });
    const err = await expectError(client.chat.completions.create({ model: MODEL, messages: MESSAGES }),
      OpenAI.RateLimitError);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    const retryAfter = Number(err.headers.get('retry-after'));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After: ${retryAfter}`);
    assert.equal((await mock.requests('primary', '/chat/completions')).length, 1);
  }));

  test('5xx → InternalServerError (only service answers 500, router 503)', T, withRouters(async (start) => {
    const router = await oneService(start);
    await mock.setDefault('primary', { kind: 'error', status: 500, body: errorBody(500, 'upstream exploded (mock)') });

    const err = await expectError(router.client().chat.completions.create({ model: MODEL, messages: MESSAGES }),
      OpenAI.InternalServerError);
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, 503);
    assert.equal(err.code, 'service_unavailable');
    assert.match(err.message, /upstream exploded \(mock\)/);
  }));

  // -------------------------------------------------------------------------
  // Retries, failover, timeouts, headers
  // -------------------------------------------------------------------------

  test("the SDK's retry honours the router's Retry-After", T, withRouters(async (start) => {
    const router = await oneService(start, { fields: { rate_limit_requests: 1, rate_limit_window: 2 } });
    const client = router.client({ maxRetries: 1 });

    await client.chat.completions.create({ model: MODEL, messages: MESSAGES });
    const started = performance.now();
    const { data, response } = await client.chat.completions.create({ model: MODEL, messages: MESSAGES }).withResponse();
    const elapsed = (performance.now() - started) / 1000;

    assert.equal(data.choices[0].message.content, hello('primary'));
    assert.equal(response.status, 200);
    assert.ok(elapsed >= 1.5 && elapsed < 10, `retried after ${elapsed.toFixed(2)} s; Retry-After should be about 2 s`);
    assert.equal((await mock.requests('primary', '/chat/completions')).length, 2);
  }));

  test('failover is invisible to the client', T, withRouters(async (start) => {
    const a = await mock.add('flaky');
    const b = await mock.add('steady');
    await mock.setDefault('flaky', { kind: 'error', status: 500, body: errorBody(500, 'flaky is down') });
    const router = await start([service('flaky', a, { priority: 0 }), service('steady', b, { priority: 1 })]);
    const client = router.client();

    const { data, response } = await client.chat.completions.create({ model: MODEL, messages: MESSAGES }).withResponse();
    assert.equal(data.choices[0].message.content, hello('steady'));
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-llm-router-service'), 'steady');
    assert.equal(response.headers.get('x-llm-router-attempts'), '2');
    assert.equal((await mock.requests('flaky', '/chat/completions')).length, 1);
    const [rec] = await mock.requests('steady', '/chat/completions');
    assert.deepEqual(rec.json.messages, MESSAGES);

    // streaming fails over the same way
    const stream = await client.chat.completions.create({ model: MODEL, messages: MESSAGES, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    assert.equal(text, hello('steady'));
  }));

  test('client timeout shorter than a slow upstream', T, withRouters(async (start) => {
    const router = await oneService(start);
    await mock.enqueue('primary', { kind: 'ok', delay: 5 });
    const client = router.client({ timeout: 1000, maxRetries: 0 });

    const started = performance.now();
    await expectError(client.chat.completions.create({ model: MODEL, messages: MESSAGES }),
      OpenAI.APIConnectionTimeoutError);
    assert.ok(performance.now() - started < 3000);

    // the router notices the client left and drops the upstream call (long before the 5 s delay ends)
    const cancelled = await waitFor(async () => {
      const recs = await mock.requests('primary', '/chat/completions');
      return recs.length > 0 && recs[0].cancelled;
    }, 3000);
    const recs = await mock.requests('primary', '/chat/completions');
    assert.ok(cancelled, `upstream request was not cancelled: ${JSON.stringify(recs)}`);
    assert.ok(recs[0].cancelled_after < 3.5 && !recs[0].completed);

    // and the router keeps serving
    assert.ok(router.alive());
    const resp = await router.client().chat.completions.create({ model: MODEL, messages: MESSAGES });
    assert.equal(resp.choices[0].message.content, hello('primary'));
  }));

  test('.withResponse() exposes x-llm-router-service', T, withRouters(async (start) => {
    const router = await oneService(start);
    const client = router.client();

    const { data, response } = await client.chat.completions.create({ model: MODEL, messages: MESSAGES }).withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-llm-router-service'), 'primary');
    assert.equal(response.headers.get('x-llm-router-attempts'), '1');
    assert.match(response.headers.get('content-type'), /^application\/json/);
    assert.equal(data.choices[0].message.content, hello('primary'));

    // streaming responses carry the header too
    const { data: stream, response: sresp } = await client.chat.completions
      .create({ model: MODEL, messages: MESSAGES, stream: true }).withResponse();
    assert.equal(sresp.headers.get('x-llm-router-service'), 'primary');
    assert.match(sresp.headers.get('content-type'), /^text\/event-stream/);
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    assert.equal(text, hello('primary'));
  }));
});
