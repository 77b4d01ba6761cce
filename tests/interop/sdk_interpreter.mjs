// The code interpreter driven by the official clients against our server:
// @cloudflare/sandbox 0.12.7's InterpreterClient over http or websocket, and capnweb over /rpc
// (SandboxControlAPI.interpreter, whose runCodeStream calls our callbacks back).
//
//   node --import ./register.mjs sdk_interpreter.mjs <baseUrl> <http|websocket|rpc>
//
// Prints one JSON line: {"mode": "...", "result": {...}} (exit 0) or {"mode": "...", "error": {...}} (exit 1).

globalThis.WebSocket ??= (await import('ws')).WebSocket;
const { SandboxClient, parseSSEStream } = await import('@cloudflare/sandbox');
const { RpcTarget, newWebSocketRpcSession } = await import('capnweb');

const [baseUrl, mode] = process.argv.slice(2);
const DEADLINE_MS = Number(process.env.INTEROP_TIMEOUT_MS ?? 60_000);

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describeError(err) {
  if (!(err instanceof Error)) return { name: typeof err, message: String(err) };
  const out = { class: err.constructor?.name, name: err.name, message: err.message };
  for (const key of ['code', 'httpStatus', 'details']) if (err[key] !== undefined) out[key] = err[key];
  return out;
}

setTimeout(() => {
  emit({ mode, error: { name: 'Timeout', message: `did not finish within ${DEADLINE_MS} ms` } });
  process.exit(2);
}, DEADLINE_MS).unref();

async function step(fn) {
  try {
    return { ok: true, result: await fn() };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  }
}

function recorder() {
  const calls = [];
  const stamp = (kind) => (value) => {
    calls.push({ kind, value: JSON.parse(JSON.stringify(value)), at: Date.now() });
  };
  return {
    calls,
    callbacks: {
      onStdout: stamp('stdout'),
      onStderr: stamp('stderr'),
      onResult: stamp('result'),
      onError: stamp('error'),
    },
  };
}

const STREAMING = 'import time, sys\nfor i in range(3):\n    print(i)\n    time.sleep(0.2)\nprint("warn", file=sys.stderr)\n21 * 2';
const PNG =
  'from IPython.display import Image, display\nimport base64\n' +
  "display(Image(data=base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')))";

async function viaSdk(transportMode) {
  const options = { baseUrl, retryTimeoutMs: 0 };
  if (transportMode === 'websocket') Object.assign(options, { transportMode, wsUrl: baseUrl.replace(/^http/, 'ws') + '/ws' });
  const { interpreter } = new SandboxClient(options);
  const context = await interpreter.createCodeContext({ language: 'python', envVars: { SDK_ENV: 'from-sdk' } });
  const listed = await interpreter.listCodeContexts();
  const run = recorder();
  await interpreter.runCodeStream(context.id, STREAMING, 'python', run.callbacks, 20_000);
  const env = recorder();
  await interpreter.runCodeStream(context.id, "import os\nprint(os.environ['SDK_ENV'])", undefined, env.callbacks);
  const failing = recorder();
  await interpreter.runCodeStream(context.id, '1 / 0', 'python', failing.callbacks);
  const events = [];
  for await (const event of parseSSEStream(await interpreter.streamCode(context.id, PNG, 'python'))) events.push(event);
  const js = await step(async () => {
    const jsContext = await interpreter.createCodeContext({ language: 'javascript' });
    const out = recorder();
    await interpreter.runCodeStream(jsContext.id, "console.log('js says hi'); [1, 2].map((x) => x * 2)", 'javascript', out.callbacks);
    await interpreter.deleteCodeContext(jsContext.id);
    return out.calls;
  });
  await interpreter.deleteCodeContext(context.id);
  const missing = await step(() => interpreter.deleteCodeContext(context.id));
  const runMissing = await step(() => interpreter.runCodeStream(context.id, '1', 'python', {}));
  return {
    context: { ...context, createdAt: context.createdAt.toISOString() },
    listed: listed.map((c) => c.id),
    run: run.calls,
    env: env.calls,
    failing: failing.calls,
    events,
    js,
    missing,
    runMissing,
  };
}

class ClientMain extends RpcTarget {}

async function viaRpc() {
  const api = newWebSocketRpcSession(baseUrl.replace(/^http/, 'ws') + '/rpc', new ClientMain());
  try {
    const context = await api.interpreter.createCodeContext({ language: 'python', envVars: { RPC_ENV: 'from-rpc' } });
    const listed = await api.interpreter.listCodeContexts();
    const run = recorder();
    await api.interpreter.runCodeStream(context.id, STREAMING, 'python', run.callbacks, 20_000);
    const env = recorder();
    await api.interpreter.runCodeStream(context.id, "import os\nprint(os.environ['RPC_ENV'])", 'python', env.callbacks);
    const failing = recorder();
    await api.interpreter.runCodeStream(context.id, '1 / 0', 'python', failing.callbacks);
    const stream = await api.interpreter.streamCode(context.id, PNG);
    const events = [];
    for await (const event of parseSSEStream(stream)) events.push(event);
    const deleted = await api.interpreter.deleteCodeContext(context.id);
    const missing = await step(() => api.interpreter.deleteCodeContext(context.id));
    return {
      context: {
        id: context.id,
        language: context.language,
        cwd: context.cwd,
        createdAtIsDate: context.createdAt instanceof Date,
        lastUsedIsDate: context.lastUsed instanceof Date,
      },
      listed: listed.map((c) => ({ id: c.id, createdAtIsDate: c.createdAt instanceof Date })),
      run: run.calls,
      env: env.calls,
      failing: failing.calls,
      events,
      deleted: deleted === undefined ? 'undefined' : deleted,
      missing,
    };
  } finally {
    api[Symbol.dispose]();
  }
}

try {
  const result = mode === 'rpc' ? await viaRpc() : await viaSdk(mode);
  emit({ mode, result });
  process.exit(0);
} catch (err) {
  emit({ mode, error: { ...describeError(err), stack: err?.stack } });
  process.exit(1);
}
