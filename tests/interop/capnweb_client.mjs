// The real capnweb (0.12.0) as a Cap'n Web client, for interop tests of our Python engine.
//
//   node capnweb_client.mjs URL SCENARIO [--batch] [--transcript FILE]
//
// URL is ws://HOST:PORT/rpc (or http://HOST:PORT/rpc with --batch; a ws URL is turned into http).
// The peer exposes the Api of capnweb_server.mjs. Runs SCENARIO and prints ONE JSON line:
//   {"ok": true, "value": V}   or   {"ok": false, "error": {"name", "message", "props"}}
// where V is the scenario's result passed through describe() below, which spells the JS values
// JSON has no form for: {"$undefined": true}, {"$bigint": "123"}, {"$num": "nan"|"inf"|"-inf"},
// {"$date": ms|null}, {"$bytes": [..], "$type": "Uint8Array"}, {"$error": {name, message, props}},
// {"$url": href}, {"$stub": true}. Exit status 0 whenever that line was printed.
// With --transcript FILE every frame is appended to FILE as
//   {"conn": 1, "dir": "c2s"|"s2c", "frame": "..."} (and {"conn": 1, "dir": "close", code, reason}).
// `node capnweb_client.mjs --list` prints the scenario names (JSON) with their transports.

globalThis.WebSocket ??= (await import('ws')).WebSocket;

const fs = await import('node:fs');
const { WebSocket } = await import('ws');
const { RpcTarget, newWebSocketRpcSession, newHttpBatchRpcSession } = await import('capnweb');

// ------------------------------------------------------------------------------------------------
// value description

function describeError(e) {
  const props = {};
  for (const key of Object.keys(e)) {
    if (key === 'stack' || key === 'message' || key === 'name') continue;
    props[key] = describe(e[key]);
  }
  if (e.cause !== undefined && !('cause' in props)) props.cause = describe(e.cause);
  return { name: e.name, message: e.message, props };
}

export function describe(v) {
  if (v === undefined) return { $undefined: true };
  if (v === null) return null;
  switch (typeof v) {
    case 'bigint':
      return { $bigint: v.toString() };
    case 'number':
      if (Number.isNaN(v)) return { $num: 'nan' };
      if (v === Infinity) return { $num: 'inf' };
      if (v === -Infinity) return { $num: '-inf' };
      return v;
    case 'string':
    case 'boolean':
      return v;
    case 'function':
      return { $stub: true };
    default:
      break;
  }
  if (v instanceof Date) return { $date: Number.isNaN(v.getTime()) ? null : v.getTime() };
  if (v instanceof ArrayBuffer) return { $bytes: Array.from(new Uint8Array(v)), $type: 'ArrayBuffer' };
  if (ArrayBuffer.isView(v)) {
    const type = Buffer.isBuffer(v) ? 'Uint8Array' : v.constructor.name;
    return { $bytes: Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)), $type: type };
  }
  if (v instanceof Error) return { $error: describeError(v) };
  if (v instanceof URL) return { $url: v.href };
  if (Array.isArray(v)) return v.map(describe);
  const out = {};
  for (const [k, x] of Object.entries(v)) out[k] = describe(x);
  return out;
}

// ------------------------------------------------------------------------------------------------
// helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function bytesStream(chunks) {
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i >= chunks.length) controller.close();
      else controller.enqueue(chunks[i++]);
    },
  });
}

async function readAll(rs) {
  const out = [];
  for await (const chunk of rs) out.push(chunk);
  return out;
}

async function rejection(promise) {
  try {
    const v = await promise;
    return { resolved: describe(v) };
  } catch (e) {
    return describeError(e);
  }
}

class LocalCounter extends RpcTarget {
  #value;
  constructor(start) {
    super();
    this.#value = start;
  }
  increment(n = 1) {
    this.#value += n;
    return this.#value;
  }
  get value() {
    return this.#value;
  }
}

// The client's own main object (the peer may call it: Api.pingClient).
class ClientMain extends RpcTarget {
  ping(x) {
    return 'pong:' + x;
  }
}

export const SPECIAL = () => ({
  big: 123n,
  huge: 2n ** 70n,
  neg: -(2n ** 64n),
  d: new Date(0),
  d2: new Date(1700000000123),
  b: new Uint8Array([1, 2, 3]),
  empty: new Uint8Array([]),
  u: undefined,
  inf: Infinity,
  ninf: -Infinity,
  nan: NaN,
  arr: [1, [2, 3], []],
  nul: null,
  err: new TypeError('te'),
  s: 'str \u00e9 \u{1F600}',
  f: 1.5,
  t: true,
  obj: { nested: { x: [1] } },
});

// ------------------------------------------------------------------------------------------------
// scenarios: name -> { run(api, ctx), batch: whether it also runs over HTTP batch }

export const SCENARIOS = {
  simple: { batch: true, run: async (api) => await api.add(1, 2) },
  pipeline_prop: { batch: true, run: async (api) => await api.getUser(1).name },
  pipeline_arg: {
    batch: true,
    run: async (api) => {
      const u = api.getUser(7);
      const r = await api.greet(u.name);
      u[Symbol.dispose]();
      return r;
    },
  },
  pipeline_target: { batch: true, run: async (api) => await api.makeCounter(10).increment(1) },
  batch_multi: {
    batch: true,
    run: async (api) => await Promise.all([api.add(2, 3), api.getUser(2).name, api.getUser(3).tags]),
  },
  callback: { batch: false, run: async (api) => await api.callMe((x) => x * 10, 4) },
  client_main: { batch: false, run: async (api) => await api.pingClient('hi') },
  target_return: {
    batch: false,
    run: async (api) => {
      const c = await api.makeCounter(5);
      const inc = await c.increment(2);
      const value = await c.value;
      const before = await api.disposals();
      c[Symbol.dispose]();
      const after = await api.disposals();
      return { inc, value, before, after };
    },
  },
  target_arg: {
    batch: false,
    run: async (api) => {
      const local = new LocalCounter(3);
      const got = await api.callTarget(local, 5);
      return { got, local: local.value };
    },
  },
  error: { batch: true, run: async (api) => await api.fail() },
  error_pipelined: {
    batch: true,
    run: async (api) => await rejection(api.makeCounter(api.fail()).increment(1)),
  },
  special: { batch: true, run: async (api) => await api.echo(SPECIAL()) },
  echo_error_value: {
    batch: true,
    run: async (api) => {
      const e = new RangeError('with props');
      e.code = 7;
      e.detail = { a: [1, 2] };
      return await api.echo(e);
    },
  },
  map: { batch: true, run: async (api) => await api.listUsers().map((u) => u.name) },
  map_capture: { batch: true, run: async (api) => await api.listUsers().map((u) => api.greet(u.name)) },
  stream_return: {
    batch: false,
    run: async (api) => (await readAll(await api.streamBytes(3))),
  },
  stream_arg: {
    batch: false,
    run: async (api) =>
      await api.upload(bytesStream([new Uint8Array([170, 0]), new Uint8Array([170, 1]), new Uint8Array([1, 2, 3])])),
  },
  writable_arg: {
    batch: false,
    run: async (api) => {
      const got = [];
      let closed = false;
      const ws = new WritableStream({
        write(chunk) {
          got.push(chunk);
        },
        close() {
          closed = true;
        },
      });
      const result = await api.writeTo(ws);
      return { result, got, closed };
    },
  },
  reader_cancel: {
    batch: false,
    run: async (api) => {
      const rs = await api.streamBytes(100);
      const reader = rs.getReader();
      const first = await reader.read();
      await reader.cancel('enough');
      const after = await api.add(2, 2);
      return { first: first.value, done: first.done, after };
    },
  },
  backpressure: {
    batch: false,
    run: async (api) => {
      const count = 10;
      const size = 65536;
      const rs = await api.bigStream(count, size);
      await sleep(300); // nothing is read for a while: the sender must stop at its window
      let chunks = 0;
      let bytes = 0;
      let contentOk = true;
      for await (const chunk of rs) {
        if (chunk.byteLength !== size || chunk.some((b) => b !== (chunks & 0xff))) contentOk = false;
        chunks += 1;
        bytes += chunk.byteLength;
        await sleep(20); // a slow reader
      }
      return { chunks, bytes, contentOk };
    },
  },
  slow_upload: {
    batch: false,
    run: async (api) => {
      const chunks = [];
      for (let i = 0; i < 10; i++) chunks.push(new Uint8Array(65536).fill(i));
      return await api.slowUpload(bytesStream(chunks), 300, 10);
    },
  },
  concurrent: {
    batch: false,
    run: async (api) => {
      const order = [];
      const track = (p) => p.then((v) => (order.push(v), v));
      const results = await Promise.all([
        track(api.sleep(400, 'slow')),
        track(api.sleep(10, 'fast')),
        track(api.sleep(200, 'mid')),
      ]);
      return { order, results };
    },
  },
  unknown_method: { batch: true, run: async (api) => await api.noSuchMethod(1) },
  dispose_main: {
    batch: false,
    run: async (api, ctx) => {
      const before = await api.add(1, 2);
      api[Symbol.dispose]();
      const after = await rejection(api.add(1, 1));
      const close = await ctx.closed;
      return { before, after, close };
    },
  },
};

// ------------------------------------------------------------------------------------------------
// main

async function main(argv) {
  if (argv[0] === '--list') {
    const list = Object.fromEntries(Object.entries(SCENARIOS).map(([k, s]) => [k, { batch: s.batch }]));
    console.log(JSON.stringify(list));
    return;
  }
  const args = [...argv];
  const batch = args.includes('--batch');
  let transcript = null;
  const ti = args.indexOf('--transcript');
  if (ti >= 0) transcript = args[ti + 1];
  const positional = args.filter((a, i) => !a.startsWith('--') && (ti < 0 || i !== ti + 1));
  const [url, name] = positional;
  const scenario = SCENARIOS[name];
  if (!url || !scenario) {
    console.log(JSON.stringify({ ok: false, error: { name: 'Usage', message: `unknown scenario ${name}`, props: {} } }));
    return;
  }
  if (transcript) fs.writeFileSync(transcript, '');
  const log = (record) => {
    if (transcript) fs.appendFileSync(transcript, JSON.stringify(record) + '\n');
  };

  let api;
  const ctx = {};
  let ws = null;
  if (batch) {
    const httpUrl = url.replace(/^ws/, 'http');
    const realFetch = globalThis.fetch;
    let conn = 0;
    globalThis.fetch = async (input, init) => {
      const c = ++conn;
      const body = init?.body ?? (input instanceof Request ? await input.clone().text() : '');
      if (typeof body === 'string' && body !== '') for (const line of body.split('\n')) log({ conn: c, dir: 'c2s', frame: line });
      const response = await realFetch(input, init);
      const text = await response.text();
      if (text !== '') for (const line of text.split('\n')) log({ conn: c, dir: 's2c', frame: line });
      return new Response(text, { status: response.status, statusText: response.statusText, headers: response.headers });
    };
    api = newHttpBatchRpcSession(httpUrl);
  } else {
    ws = new WebSocket(url);
    const send = ws.send.bind(ws);
    ws.send = (data, ...rest) => {
      log({ conn: 1, dir: 'c2s', frame: String(data) });
      return send(data, ...rest);
    };
    ws.on('message', (data, isBinary) => log({ conn: 1, dir: 's2c', frame: isBinary ? '<binary>' : data.toString() }));
    ctx.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        log({ conn: 1, dir: 'close', code, reason: reason.toString() });
        resolve({ code, reason: reason.toString() });
      });
    });
    ws.on('error', () => {});
    api = newWebSocketRpcSession(ws, new ClientMain());
  }

  let out;
  try {
    out = { ok: true, value: describe(await scenario.run(api, ctx)) };
  } catch (e) {
    out = { ok: false, error: e instanceof Error ? describeError(e) : { name: 'NonError', message: String(e), props: {} } };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  if (ws !== null && ws.readyState !== WebSocket.CLOSED) {
    try {
      api[Symbol.dispose]();
    } catch {}
    await Promise.race([ctx.closed, sleep(2000)]);
  }
}

const isMain = import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href;
if (isMain) {
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ ok: false, error: { name: 'Timeout', message: 'scenario timed out', props: {} } }) + '\n');
    process.exit(0);
  }, Number(process.env.CAPNWEB_CLIENT_TIMEOUT_MS ?? 30000));
  await main(process.argv.slice(2));
  process.exit(0);
}
