// Drive a sandbox server from outside its container (.ci/container) with the official clients:
// @cloudflare/sandbox over http and over ws, and capnweb over rpc, each sending the token.
//
//   SANDBOX_TOKEN=... node --import ./register.mjs container_drive.mjs <baseUrl> [latencyRuns]
//
// On each transport: a command (`id -u` must say $EXPECT_UID, default 1000), a file round trip, a background process
// and its logs, a Python context (and a JavaScript one over http), then `latencyRuns` sequential
// `true` commands on one session. Prints one JSON line:
//   {"ok": true, "latency": {"http": {"median_ms", "p90_ms"}, ...}}                 exit 0
//   {"ok": false, "transport": "...", "step": "...", "error": "..."}                 exit 1
// and exits 2 when the whole run has not finished within its deadline.

import { SandboxClient, parseSSEStream } from '@cloudflare/sandbox';
import { newWebSocketRpcSession, RpcTarget } from 'capnweb';
import { WebSocket as NodeWebSocket } from 'ws';

const [baseUrl, runsArg] = process.argv.slice(2);
const runs = Number(runsArg ?? 30);
const token = process.env.SANDBOX_TOKEN;
const DEADLINE_MS = Number(process.env.DRIVE_TIMEOUT_MS ?? 120_000);
if (!baseUrl || !token) {
  process.stdout.write(JSON.stringify({ ok: false, error: 'usage: SANDBOX_TOKEN=... container_drive.mjs <baseUrl>' }) + '\n');
  process.exit(1);
}
const uid = process.env.EXPECT_UID ?? '1000';  // the uid user code must run as
const auth = { Authorization: `Bearer ${token}` };

// Every request carries the token: fetch (http transport) and WebSocket upgrades (ws, rpc).
const plainFetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  for (const [k, v] of Object.entries(auth)) headers.set(k, v);
  return plainFetch(input, { ...init, headers });
};
globalThis.WebSocket = class extends NodeWebSocket {
  constructor(url, protocols, options = {}) {
    super(url, protocols, { ...options, headers: { ...(options.headers ?? {}), ...auth } });
  }
};

setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, error: `not finished within ${DEADLINE_MS} ms` }) + '\n');
  process.exit(2);
}, DEADLINE_MS).unref();

let where = { transport: null, step: null };
function expect(cond, what) {
  if (!cond) throw new Error(`unexpected: ${what}`);
}

async function collect(stream) {
  const events = [];
  for await (const event of parseSSEStream(stream)) events.push(event);
  return events;
}

async function latency(execute) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    const r = await execute('true');
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    expect(r.exitCode === 0, `true exited ${r.exitCode}`);
  }
  times.sort((a, b) => a - b);
  const at = (q) => Number(times[Math.min(times.length - 1, Math.floor(q * times.length))].toFixed(2));
  return { runs, median_ms: at(0.5), p90_ms: at(0.9) };
}

function recorder() {
  const out = { stdout: [], results: [], errors: [] };
  return {
    out,
    callbacks: {
      onStdout: (o) => out.stdout.push(o.text),
      onStderr: () => {},
      onResult: (r) => out.results.push(r),
      onError: (e) => out.errors.push(e),
    },
  };
}

// The same checks through the SDK's clients (http, ws) and the rpc api stub: they share the API.
async function drive(name, api, { javascript = false } = {}) {
  const sid = `container-${name}`;
  const tag = `${name}-${process.pid}`;
  where = { transport: name, step: 'command' };
  const id = await api.commands.execute('id -u', sid);
  expect(id.exitCode === 0 && id.stdout.trim() === uid, `id -u said ${JSON.stringify(id)}`);

  where.step = 'file round trip';
  const home = (await api.commands.execute('pwd', sid)).stdout.trim();
  const path = `${home}/${tag}.txt`;
  const text = `héllo from ${name} ✓\n`;
  await api.files.writeFile(path, text, sid);
  const read = await api.files.readFile(path, sid);
  expect(read.content === text, `read back ${JSON.stringify(read.content)}`);
  await api.files.deleteFile(path, sid);

  where.step = 'background process';
  const processId = `p-${tag}`;
  await api.processes.startProcess("echo one; sleep 0.2; echo two >&2", sid, { processId });
  await collect(await api.processes.streamProcessLogs(processId));
  const logs = await api.processes.getProcessLogs(processId);
  expect(logs.stdout === 'one\n' && logs.stderr === 'two\n', `logs ${JSON.stringify(logs)}`);

  where.step = 'python context';
  const ctx = await api.interpreter.createCodeContext({ language: 'python' });
  const py = recorder();
  await api.interpreter.runCodeStream(ctx.id, 'import os\nprint(os.getuid())\n6 * 7', 'python', py.callbacks);
  expect(py.out.stdout.join('') === `${uid}\n`, `python printed ${JSON.stringify(py.out)}`);
  expect(py.out.results.some((r) => r.text === '42'), `python result ${JSON.stringify(py.out.results)}`);
  await api.interpreter.deleteCodeContext(ctx.id);

  if (javascript) {
    where.step = 'javascript context';
    const js = await api.interpreter.createCodeContext({ language: 'javascript' });
    const out = recorder();
    await api.interpreter.runCodeStream(js.id, "console.log('js ' + process.getuid())", 'javascript', out.callbacks);
    expect(out.out.stdout.join('').includes(`js ${uid}`), `javascript printed ${JSON.stringify(out.out)}`);
    await api.interpreter.deleteCodeContext(js.id);
  }

  where.step = 'latency';
  return latency((cmd) => api.commands.execute(cmd, sid));
}

class ClientMain extends RpcTarget {}

const result = { ok: true, latency: {} };
try {
  result.latency.http = await drive('http', new SandboxClient({ baseUrl, retryTimeoutMs: 0 }), { javascript: true });
  const wsClient = new SandboxClient({
    baseUrl,
    transportMode: 'websocket',
    wsUrl: baseUrl.replace(/^http/, 'ws') + '/ws',
    retryTimeoutMs: 0,
  });
  result.latency.ws = await drive('ws', wsClient);
  const rpc = newWebSocketRpcSession(baseUrl.replace(/^http/, 'ws') + '/rpc', new ClientMain());
  try {
    result.latency.rpc = await drive('rpc', rpc);
  } finally {
    rpc[Symbol.dispose]();
  }
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, ...where, error: String(err?.stack ?? err) }) + '\n');
  process.exit(1);
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
