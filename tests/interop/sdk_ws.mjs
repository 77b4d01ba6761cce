// Drive a sandbox server with the official @cloudflare/sandbox 0.12.7 client over its
// websocket transport (`transportMode: 'websocket'`: every route as frames on one socket).
//
//   node --import ./register.mjs sdk_ws.mjs <baseUrl> <scenario>
//
// Prints exactly one JSON line on stdout, as sdk_http.mjs:
//   {"scenario": "...", "result": ...}                  exit 0
//   {"scenario": "...", "error": {name, message, ...}}  exit 1
//   {"scenario": "...", "error": {name: "Timeout"...}}  exit 2 (global deadline hit)
// Scenarios that expect errors record each step as {ok: true, result} or {ok: false, error}.

import { SandboxClient, parseSSEStream } from '@cloudflare/sandbox';

const [baseUrl, scenario] = process.argv.slice(2);
const DEADLINE_MS = Number(process.env.INTEROP_TIMEOUT_MS ?? 25_000);

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describeError(err) {
  if (!(err instanceof Error)) return { name: typeof err, message: String(err) };
  const out = { class: err.constructor?.name, name: err.name, message: err.message };
  for (const key of ['code', 'httpStatus', 'operation', 'context']) {
    try {
      if (err[key] !== undefined) out[key] = err[key];
    } catch {
      /* getter failed: ignore */
    }
  }
  if (err.cause !== undefined) out.cause = describeError(err.cause);
  return out;
}

const abort = new AbortController();
setTimeout(() => {
  abort.abort();
  emit({ scenario, error: { name: 'Timeout', message: `scenario did not finish within ${DEADLINE_MS} ms` } });
  process.exit(2);
}, DEADLINE_MS).unref();

async function step(fn) {
  try {
    return { ok: true, result: await fn() };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  }
}

async function collectEvents(stream) {
  const events = [];
  for await (const event of parseSSEStream(stream, abort.signal)) events.push(event);
  return events;
}

const scenarios = {
  async execute(client) {
    return client.commands.execute('echo hi', 'interop-ws-s1');
  },

  async execute_stream(client) {
    const stream = await client.commands.executeStream('echo a; echo b >&2; exit 3', 'interop-ws-s2');
    return collectEvents(stream);
  },

  async errors(client) {
    // `exit N` kills the session's shell: 410 SESSION_TERMINATED; the next call gets a fresh one
    const exit = await step(() => client.commands.execute('exit 7', 'interop-ws-s3'));
    const after = await step(() => client.commands.execute('echo back', 'interop-ws-s3'));
    const missing = await step(() => client.files.readFile('/nonexistent/interop-ws', 'interop-ws-s3'));
    // a stream that fails to start rejects with the SDK's "Stream error: <status> - <body>"
    const stream = await step(() => client.processes.streamProcessLogs('interop-ws-no-such-process'));
    return { exit, after, missing, stream };
  },

  // several calls in a row and in parallel, all on the one socket
  async many(client) {
    const first = await client.commands.execute('echo 0', 'interop-ws-m');
    const parallel = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.commands.execute(`echo ${i + 1}`, `interop-ws-m${i % 4}`)),
    );
    const events = await collectEvents(
      await client.commands.executeStream('for i in 1 2 3; do echo $i; done', 'interop-ws-m'),
    );
    return { stdout: [first, ...parallel].map((r) => r.stdout), events };
  },
};

async function main() {
  if (!baseUrl || !scenarios[scenario]) {
    emit({
      scenario: scenario ?? null,
      error: {
        name: 'UsageError',
        message: `usage: node --import ./register.mjs sdk_ws.mjs <baseUrl> <${Object.keys(scenarios).join('|')}>`,
      },
    });
    process.exit(1);
  }
  const wsUrl = baseUrl.replace(/^http/, 'ws') + '/ws';
  const client = new SandboxClient({ baseUrl, transportMode: 'websocket', wsUrl, retryTimeoutMs: 0 });
  try {
    const result = await scenarios[scenario](client);
    emit({ scenario, result });
    process.exit(0);
  } catch (err) {
    emit({ scenario, error: describeError(err) });
    process.exit(1);
  }
}

await main();
