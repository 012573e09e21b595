// The JavaScript examples of docs/clients.md, run as they are written.
//
// Every ```js block whose info string has a title="..." is written to a
// temporary .mjs file in this directory (so `import OpenAI from "openai"` finds
// node_modules here) and run with node against a fresh router (release binary,
// client keys checked) in front of the mock upstream. The example sees only
// PATH, HOME, ROUTER_URL and ROUTER_KEY. The test checks its exit status and its
// output against EXPECTED below. The python and sh blocks are run by
// python/test_docs_examples.py.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, test } from 'node:test';
import { CLIENT_KEY, Mock, service, withRouters } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DOC = path.resolve(HERE, '..', '..', 'docs', 'clients.md');
const HELLO = 'Hello from mock upstream primary, all good.';
const MODELS = ['test-model', 'test-embedding', 'meta-llama/Llama-3.1-8B'];
const T = { timeout: 60_000 };

// title -> [scenario, strings the output must contain]. Scenarios:
//   default  the service "primary" serving MODELS
//   retry    the same with a limit of 1 request per 2 s, its slot taken just before
//   slow     the same, with the upstream's next answer delayed by 5 s
const EXPECTED = {
  chat: ['default', [HELLO]],
  stream: ['default', [HELLO + '\n']],
  errors: ['default', ['404 model_not_found']],
  retries: ['retry', [HELLO]],
  timeout: ['slow', ['no answer within 1 s']],
  'with-response': ['default', ['service: primary', 'attempts: 1', 'request id: checkout-7f3a', 'model: test-model']],
};

/** The js blocks of the page with a title: Map(title -> code). */
function examples() {
  const text = readFileSync(DOC, 'utf8');
  const found = new Map();
  for (const m of text.matchAll(/^```([^\n]*)\n([\s\S]*?)^```[ \t]*$/gm)) {
    const info = m[1].trim();
    const title = info.match(/\btitle="([^"]+)"/);
    if (info.split(/\s+/)[0] !== 'js' || !title) continue;
    assert.ok(!found.has(title[1]), `two js examples titled ${title[1]} in ${DOC}`);
    found.set(title[1], m[2]);
  }
  return found;
}

function run(file, env) {
  return new Promise((resolve) => {
    const started = Date.now();
    execFile(process.execPath, [file], { cwd: HERE, env, timeout: 45_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr, elapsed: Date.now() - started });
    });
  });
}

describe('docs/clients.md JavaScript examples', () => {
  let mock;
  const blocks = examples();

  before(async () => {
    mock = await Mock.start();
  });
  after(async () => {
    await mock?.stop();
  });
  afterEach(async () => {
    await mock.reset();
  });

  test('every js example has an expectation, and every expectation an example', () => {
    assert.deepEqual([...blocks.keys()].sort(), Object.keys(EXPECTED).sort());
  });

  for (const [title, [scenario, expected]] of Object.entries(EXPECTED)) {
    test(`example "${title}"`, T, withRouters(async (start, t) => {
      const code = blocks.get(title);
      assert.ok(code, `no js example titled ${title} in ${DOC}`);
      const url = await mock.add('primary', { models: MODELS });
      const fields = scenario === 'retry' ? { rate_limit_requests: 1, rate_limit_window: 2 } : {};
      const router = await start([service('primary', url, fields)]);
      const routerURL = `http://127.0.0.1:${router.port}`;
      if (scenario === 'retry') {
        const res = await fetch(`${routerURL}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${CLIENT_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'test-model', messages: [{ role: 'user', content: 'take the slot' }] }),
        });
        assert.equal(res.status, 200);
        await res.text();
      } else if (scenario === 'slow') {
        await mock.enqueue('primary', { kind: 'ok', delay: 5 });
      }

      const file = path.join(HERE, `.docs-example-${title}-${process.pid}.mjs`);
      writeFileSync(file, code);
      let result;
      try {
        result = await run(file, {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? HERE,
          ROUTER_URL: routerURL,
          ROUTER_KEY: CLIENT_KEY,
        });
      } finally {
        rmSync(file, { force: true });
      }
      const { code: status, stdout, stderr, elapsed } = result;
      try {
        assert.equal(status, 0, `example ${title} failed:\n${stderr}`);
        for (const piece of expected) {
          assert.ok(stdout.includes(piece), `example ${title}: ${JSON.stringify(piece)} not in its output:\n${stdout}`);
        }
        const chats = await mock.requests('primary', '/chat/completions');
        if (scenario === 'retry') {
          // the first attempt got the router's 429 and never reached the upstream; the retry waited ~2 s
          assert.ok(elapsed >= 1500, `the SDK retried after ${elapsed} ms, before Retry-After`);
          assert.equal(chats.length, 2);
        }
        if (scenario === 'slow') {
          assert.ok(elapsed < 4500, `the example gave up after ${elapsed} ms`);
        }
        // the examples never send the client key upstream
        for (const rec of chats) assert.equal(rec.headers.authorization, 'Bearer sk-upstream-primary');
      } catch (err) {
        t.diagnostic(`example ${title}: exit ${status} after ${elapsed} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`);
        throw err;
      }
    }));
  }
});
