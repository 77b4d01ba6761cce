// Drive a sandbox server with the official @cloudflare/sandbox 0.12.7 client
// over its http transport.
//
//   node --import ./register.mjs sdk_http.mjs <baseUrl> <scenario>
//
// Prints exactly one JSON line on stdout:
//   {"scenario": "...", "result": ...}                  exit 0
//   {"scenario": "...", "error": {name, message, ...}}  exit 1
//   {"scenario": "...", "error": {name: "Timeout"...}}  exit 2 (global deadline hit)
// Scenarios that expect errors (`errors`) record each step's outcome as
// {ok: true, result} or {ok: false, error} and still exit 0.

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

// Every network wait is bounded by this one deadline.
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
    return client.commands.execute('echo hi', 'interop-s1');
  },

  async execute_stream(client) {
    const stream = await client.commands.executeStream('echo a; echo b >&2; exit 3', 'interop-s2');
    return collectEvents(stream);
  },

  async session_state(client) {
    const first = await client.commands.execute('export FOO=bar; cd /tmp', 'interop-s3');
    const second = await client.commands.execute('echo $FOO; pwd', 'interop-s3');
    return { first, second };
  },

  async errors(client) {
    // `exit N` in a session's foreground exec kills the shell: 410 SESSION_TERMINATED.
    const exit = await step(() => client.commands.execute('exit 7', 'interop-s4'));
    // The next call on the same id should get a fresh shell.
    const after = await step(() => client.commands.execute('echo back', 'interop-s4'));
    // Duplicate session id: 409 SESSION_ALREADY_EXISTS.
    const id = `interop-dup-${process.pid}-${Date.now()}`;
    const create1 = await step(() => client.utils.createSession({ id }));
    const create2 = await step(() => client.utils.createSession({ id }));
    return { exit, after, sessionId: id, create1, create2 };
  },

  async env_cwd(client) {
    const scoped = await client.commands.execute('echo "A=$A"; pwd', 'interop-s5', {
      env: { A: '1' },
      cwd: '/tmp',
    });
    // env and cwd are per-command: the session must not keep them.
    const after = await client.commands.execute('echo "A=${A-unset}"; pwd', 'interop-s5');
    return { scoped, after };
  },
};

async function main() {
  if (!baseUrl || !scenarios[scenario]) {
    emit({
      scenario: scenario ?? null,
      error: {
        name: 'UsageError',
        message: `usage: node --import ./register.mjs sdk_http.mjs <baseUrl> <${Object.keys(scenarios).join('|')}>`,
      },
    });
    process.exit(1);
  }
  // retryTimeoutMs: 0 turns off the SDK's 503 "container starting" retry loop
  // (up to 120 s by default), so a 503 surfaces at once.
  const client = new SandboxClient({ baseUrl, retryTimeoutMs: 0 });
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
