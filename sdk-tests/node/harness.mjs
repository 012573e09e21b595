// Test harness for the Node SDK suite: the shared Python mock upstream (run as a
// child process and driven over its /_control API) and the router release
// binary, started per test on a free loopback port.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
export const CLIENT_KEY = 'sk-sdk-tests-client-key-0123456789';
// Only these variables of ours reach the router, so a stray OPENAI_API_KEY or
// AUTH_KEY on the machine cannot change its configuration.
const KEEP_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TMPDIR', 'TZ', 'RUST_BACKTRACE'];

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function routerBin() {
  return process.env.LLM_ROUTER_BIN || path.join(REPO, 'target', 'release', 'llm-router');
}

export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

export function service(name, baseUrl, fields = {}) {
  return { name, backend_type: 'custom', base_url: baseUrl, api_key: `sk-upstream-${name}`, ...fields };
}

export async function waitFor(predicate, limitMs, stepMs = 50) {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    const value = await predicate();
    if (value) return value;
    await sleep(stepMs);
  }
  return predicate();
}

// ---------------------------------------------------------------------------
// Mock upstream (sdk-tests/mock/upstream.py)
// ---------------------------------------------------------------------------

export class Mock {
  static async start() {
    const venvPython = path.join(REPO, 'target', 'sdk-venv', 'bin', 'python');
    const python = process.env.SDK_TESTS_PYTHON || (existsSync(venvPython) ? venvPython : 'python3');
    const child = track(spawn(python, [path.join(REPO, 'sdk-tests', 'mock', 'upstream.py')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    }));
    const port = await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error('mock upstream did not start within 15 s')), 15000);
      child.stdout.on('data', (buf) => {
        out += buf.toString();
        const m = out.match(/MOCK_PORT=(\d+)/);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`mock upstream exited with ${code} before printing its port`));
      });
    });
    child.stdout.resume();
    return new Mock(child, port);
  }

  constructor(child, port) {
    this.child = child;
    this.port = port;
  }

  async #call(method, urlPath, body) {
    const res = await fetch(`http://127.0.0.1:${this.port}/_control${urlPath}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10000),
    });
    if (!res.ok) throw new Error(`mock control ${method} ${urlPath}: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** Creates (or replaces) upstream `name`; returns its base URL. */
  async add(name, { models = ['test-model'], behavior } = {}) {
    const spec = { name, models };
    if (behavior) spec.default = behavior;
    return (await this.#call('POST', '/upstreams', spec)).base_url;
  }

  setDefault(name, behavior) {
    return this.#call('POST', `/upstreams/${name}/default`, behavior);
  }

  enqueue(name, ...behaviors) {
    return this.#call('POST', `/upstreams/${name}/queue`, { behaviors });
  }

  requests(name, urlPath) {
    const q = urlPath ? `?path=${encodeURIComponent(urlPath)}` : '';
    return this.#call('GET', `/upstreams/${name}/requests${q}`);
  }

  reset() {
    return this.#call('POST', '/reset', {});
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.stdin.end(); // the mock exits when its stdin closes
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

export class Router {
  static async start(services, env = {}) {
    const bin = routerBin();
    let lastLog = '';
    for (let attempt = 0; attempt < 3; attempt++) {
      const router = new Router(services, env, await freePort());
      router.spawn(bin);
      if (await router.waitHealthy(10000)) return router;
      await router.stop();
      lastLog = router.log;
      if (!/in use/i.test(lastLog)) break; // retry only when the port was taken meanwhile
    }
    throw new Error(`router did not become healthy; its output:\n${lastLog}`);
  }

  constructor(services, env, port) {
    this.services = services;
    this.extraEnv = env;
    this.port = port;
    this.log = '';
    this.child = null;
    this.workdir = mkdtempSync(path.join(os.tmpdir(), 'sdk-tests-router-'));
  }

  get baseURL() {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  client(opts = {}) {
    return new OpenAI({ apiKey: CLIENT_KEY, baseURL: this.baseURL, maxRetries: 0, timeout: 20000, ...opts });
  }

  spawn(bin) {
    const env = {};
    for (const k of KEEP_ENV) if (process.env[k] !== undefined) env[k] = process.env[k];
    Object.assign(env, {
      ROUTER_SERVICES: JSON.stringify(this.services),
      AUTH_KEY: CLIENT_KEY,
      HOST: '127.0.0.1',
      PORT: String(this.port),
      REQUEST_TIMEOUT: '15',
      SHUTDOWN_GRACE_PERIOD: '1',
      LOG_LEVEL: 'info',
    }, this.extraEnv);
    // cwd is an empty directory, so no stray .env is read
    this.child = track(spawn(bin, [], { cwd: this.workdir, env, stdio: ['ignore', 'pipe', 'pipe'] }));
    const append = (buf) => {
      this.log += buf.toString();
      if (this.log.length > 200000) this.log = this.log.slice(-100000);
    };
    this.child.stdout.on('data', append);
    this.child.stderr.on('data', append);
    this.child.once('error', (e) => append(`spawn error: ${e.message}\n`));
  }

  alive() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  async waitHealthy(limitMs) {
    const deadline = Date.now() + limitMs;
    while (Date.now() < deadline) {
      if (!this.alive()) return false;
      try {
        const res = await fetch(`http://127.0.0.1:${this.port}/health`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return true;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    return false;
  }

  async stop() {
    if (this.child && this.alive()) {
      const exited = once(this.child, 'exit');
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.workdir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Per-test context: routers started in a test are stopped after it, and the
// output of each is reported (as a test diagnostic) when the test fails.
// ---------------------------------------------------------------------------

export function withRouters(fn) {
  return async (t) => {
    const routers = [];
    const start = async (services, env) => {
      const r = await Router.start(services, env);
      routers.push(r);
      return r;
    };
    try {
      await fn(start, t);
    } catch (err) {
      for (const r of routers) t.diagnostic(`---- router on port ${r.port} ----\n${r.log.slice(-8000)}`);
      throw err;
    } finally {
      await Promise.all(routers.map((r) => r.stop()));
    }
  };
}
