// Drive our sandbox server's /rpc (SandboxControlAPI) with the official capnweb 0.12 client.
//
//   node sandbox_rpc.mjs <baseUrl> <scenario> [--batch]
//
// <baseUrl> is http://HOST:PORT; the script connects to ws://HOST:PORT/rpc with
// newWebSocketRpcSession (or, with --batch, to http://HOST:PORT/rpc with newHttpBatchRpcSession:
// one session, i.e. one POST, per `ctx.connect()`). Prints exactly one JSON line on stdout:
//   {"scenario": "...", "result": ...}                  exit 0
//   {"scenario": "...", "error": {name, message, ...}}  exit 1
//   {"scenario": "...", "error": {name: "Timeout"...}}  exit 2 (global deadline hit)
// Steps that may fail are recorded as {ok: true, result} or {ok: false, error: {name, message,
// code, details, ownKeys}}. SSE bytes from streams are parsed into {event, data} records (and the
// raw text is kept where its exact form matters).

const { WebSocket } = await import('ws');

// capnweb opens its socket with the global WebSocket (Node 20 has none): this one also records
// every frame the client sends, so a scenario can check what went over the wire
const sentFrames = [];
globalThis.WebSocket = class RecordingWebSocket extends WebSocket {
  send(data, ...rest) {
    sentFrames.push(typeof data === 'string' ? data : Buffer.from(data).toString());
    return super.send(data, ...rest);
  }
};

const crypto = await import('node:crypto');
const net = await import('node:net');
const { RpcTarget, newWebSocketRpcSession, newHttpBatchRpcSession } = await import('capnweb');

const args = process.argv.slice(2);
const batch = args.includes('--batch');
const [baseUrl, scenario] = args.filter((a) => a !== '--batch');
const DEADLINE_MS = Number(process.env.INTEROP_TIMEOUT_MS ?? 60_000);
const wsUrl = baseUrl.replace(/^http/, 'ws') + '/rpc';
const httpUrl = baseUrl.replace(/^ws/, 'http') + '/rpc';

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describeError(err) {
  if (!(err instanceof Error)) return { name: typeof err, message: String(err) };
  const out = { name: err.name, message: err.message, ownKeys: Object.keys(err).sort() };
  for (const key of ['code', 'details', 'httpStatus']) if (err[key] !== undefined) out[key] = err[key];
  return out;
}

setTimeout(() => {
  emit({ scenario, error: { name: 'Timeout', message: `scenario did not finish within ${DEADLINE_MS} ms` } });
  process.exit(2);
}, DEADLINE_MS).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const rand = () => crypto.randomBytes(4).toString('hex');

async function step(fn) {
  try {
    return { ok: true, result: await fn() };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  }
}

// ------------------------------------------------------------------------------------------------
// streams

function bytesStream(chunks) {
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i >= chunks.length) controller.close();
      else controller.enqueue(chunks[i++]);
    },
  });
}

async function readText(stream) {
  const decoder = new TextDecoder();
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError(`stream chunk is ${chunk?.constructor?.name}, not Uint8Array`);
    }
    chunks += 1;
    text += decoder.decode(chunk, { stream: true });
  }
  return { text: text + decoder.decode(), chunks };
}

// SSE text -> [{event, data}] (`event:`/`data:` lines, blank line ends an event)
function parseSSE(text) {
  const events = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim()) continue;
    let event = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).replace(/^ /, '');
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    events.push({ event, data: JSON.parse(data.join('\n')) });
  }
  return events;
}

async function readSSE(stream) {
  const { text, chunks } = await readText(stream);
  return { events: parseSSE(text), chunks, endsWithBlankLine: text.endsWith('\n\n') };
}

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function until(fn, { timeoutMs = 5000, intervalMs = 100 } = {}) {
  const start = Date.now();
  for (;;) {
    const value = await fn();
    if (value) return { ok: true, elapsedMs: Date.now() - start, value };
    if (Date.now() - start > timeoutMs) return { ok: false, elapsedMs: Date.now() - start };
    await sleep(intervalMs);
  }
}

// a command whose process has a unique marker in its command line (as `sh -c`'s $0);
// pgrep with a bracketed pattern never matches its own command line
function marked(body, marker) {
  return `sh -c '${body}' ${marker}`;
}
const pattern = (marker) => `[${marker[0]}]${marker.slice(1)}`;

// ------------------------------------------------------------------------------------------------
// scenarios: each gets ctx = {api, connect, batch}; `api` is the session's main stub

class ClientMain extends RpcTarget {}

const scenarios = {
  async execute({ api }) {
    const sid = `rpc-exec-${rand()}`;
    const hi = await api.commands.execute('echo hi', sid);
    const nonzero = await api.commands.execute('echo out; echo err >&2; (exit 4)', sid);
    const home = (await api.commands.execute('pwd', sid)).stdout;
    const scoped = await api.commands.execute('echo "$FOO-$BAR"; pwd', sid, {
      env: { FOO: 'foo', BAR: 'bar baz' },
      cwd: '/tmp',
    });
    const after = await api.commands.execute('echo "[$FOO]"; pwd', sid);
    const exported = await api.commands.execute('export KEEP=kept; cd /tmp', sid);
    const persisted = await api.commands.execute('echo "$KEEP"; pwd', sid);
    const badCwd = await step(() => api.commands.execute('true', sid, { cwd: '/nonexistent/rpc-interop' }));
    const badEnv = await step(() => api.commands.execute('true', sid, { env: { '1BAD': 'x' } }));
    const terminated = await step(() => api.commands.execute('exit 3', sid));
    const back = await api.commands.execute('echo back; echo "[$KEEP]"', sid);
    const missing = await step(() => api.files.readFile('/nonexistent/rpc-interop.txt', sid));
    return { hi, nonzero, home, scoped, after, exported, persisted, badCwd, badEnv, terminated, back, missing };
  },

  async execute_stream({ api }) {
    const sid = `rpc-stream-${rand()}`;
    const cmd = 'echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c; (exit 3)';
    const stream = await api.commands.executeStream(cmd, sid);
    const isReadable = stream instanceof ReadableStream;
    const { text } = await readText(stream);
    const ok = await readSSE(await api.commands.executeStream('printf "x\\ny\\n"', sid));
    const env = await readSSE(
      await api.commands.executeStream('echo "$V"; pwd', sid, { env: { V: 'vee' }, cwd: '/tmp' }),
    );
    const empty = await readSSE(await api.commands.executeStream('', sid));
    return { isReadable, text, events: parseSSE(text), ok: ok.events, env: env.events, empty: empty.events };
  },

  // reader.cancel() on an exec stream, for a command that keeps printing, one that prints once
  // a second later, and a silent one; and a silent one whose connection closes (not cancelled).
  // capnweb 0.12 sends nothing when a reader cancels: the server learns it when a write of the
  // stream is rejected (its output, or a heartbeat it writes to a silent stream). Each command
  // is probed with pgrep from another session.
  async stream_cancel({ api, connect }) {
    const sid = `rpc-cancel-${rand()}`;
    const probe = `rpc-probe-${rand()}`;
    const running = async (marker) =>
      (await api.commands.execute(`pgrep -f '${pattern(marker)}'`, probe)).exitCode === 0;
    const results = {};
    for (const [name, body] of [
      ['printer', 'while :; do echo tick; sleep 0.05; done'],
      ['late', 'sleep 1; echo later; sleep 30; echo never'],
      ['silent', 'sleep 30; echo never'],
      ['closed', 'sleep 30; echo never'],
    ]) {
      const marker = `rpccancel${name}${rand()}`;
      const conn = name === 'closed' ? connect() : api;
      const stream = await conn.commands.executeStream(marked(body, marker), sid);
      const reader = stream.getReader();
      const first = await reader.read();
      const firstEvents = parseSSE(new TextDecoder().decode(first.value));
      // the command is running: a probe from another session sees it
      const runningBefore = (await until(() => running(marker), { timeoutMs: 5000, intervalMs: 50 })).ok;
      const endStart = Date.now();
      if (name === 'closed') conn[Symbol.dispose](); // ends the session, its streams and their commands
      else await reader.cancel();
      const gone = await until(async () => !(await running(marker)), { timeoutMs: 8000, intervalMs: 100 });
      const listed = (await api.processes.listProcesses()).processes.filter((p) => p.command.includes(marker));
      const usable = await api.commands.execute('echo usable', sid);
      results[name] = {
        first: { done: first.done, events: firstEvents },
        runningBefore,
        goneAfterMs: gone.ok ? Date.now() - endStart : null,
        listed: listed.map((p) => ({ status: p.status, exitCode: p.exitCode ?? null })),
        usable: { exitCode: usable.exitCode, stdout: usable.stdout },
      };
    }
    return results;
  },

  async files({ api }) {
    const sid = `rpc-files-${rand()}`;
    const home = (await api.commands.execute('pwd', sid)).stdout;
    const dir = `${home}/rpc-files-${rand()}`;
    const r = { dir };
    r.mkdir = await api.files.mkdir(`${dir}/sub/deep`, sid, { recursive: true });
    r.mkdirMissingParent = await step(() => api.files.mkdir(`${dir}/nope/child`, sid));
    r.writeText = await api.files.writeFile(`${dir}/a.txt`, 'héllo\nworld\n', sid);
    r.readText = await api.files.readFile(`${dir}/a.txt`, sid);
    const bin = Buffer.from([0, 1, 2, 255, 254, 10]).toString('base64');
    r.writeBase64 = await api.files.writeFile(`${dir}/b.bin`, bin, sid, { encoding: 'base64' });
    r.readBase64 = await api.files.readFile(`${dir}/b.bin`, sid, { encoding: 'base64' });
    r.binAsBase64 = bin;
    r.existsYes = await api.files.exists(`${dir}/a.txt`, sid);
    r.existsNo = await api.files.exists(`${dir}/missing`, sid);
    r.list = await api.files.listFiles(dir, sid);
    r.listRecursive = await api.files.listFiles(dir, sid, { recursive: true });
    r.rename = await api.files.renameFile(`${dir}/a.txt`, `${dir}/a2.txt`, sid);
    r.move = await api.files.moveFile(`${dir}/a2.txt`, `${dir}/sub/a3.txt`, sid);
    r.readMoved = (await api.files.readFile(`${dir}/sub/a3.txt`, sid)).content;
    r.oldGone = (await api.files.exists(`${dir}/a.txt`, sid)).exists;
    r.readStream = await readSSE(await api.files.readFileStream(`${dir}/sub/a3.txt`, sid));
    r.readStreamMissing = await step(async () => readSSE(await api.files.readFileStream(`${dir}/missing`, sid)));
    r.delete = await api.files.deleteFile(`${dir}/sub/a3.txt`, sid);
    r.deletedGone = (await api.files.exists(`${dir}/sub/a3.txt`, sid)).exists;
    r.deleteDir = await step(() => api.files.deleteFile(`${dir}/sub`, sid));
    r.deleteMissing = await step(() => api.files.deleteFile(`${dir}/missing`, sid));
    r.renameMissing = await step(() => api.files.renameFile(`${dir}/missing`, `${dir}/x`, sid));
    r.listMissing = await step(() => api.files.listFiles(`${dir}/missing`, sid));
    r.listFile = await step(() => api.files.listFiles(`${dir}/b.bin`, sid));
    return r;
  },

  async files_stream({ api }) {
    const sid = `rpc-fstream-${rand()}`;
    const home = (await api.commands.execute('pwd', sid)).stdout;
    const dir = `${home}/rpc-fstream-${rand()}`;
    const enc = new TextEncoder();
    const small = await api.files.writeFileStream(
      `${dir}/nested/small.txt`,
      bytesStream([enc.encode('ab'), enc.encode('cd'), enc.encode('é'), enc.encode('\n')]),
      sid,
    );
    const smallRead = (await api.files.readFile(`${dir}/nested/small.txt`, sid)).content;

    // ~20 MiB of deterministic pseudo-random bytes, written in 320 chunks of 64 KiB
    const chunkSize = 64 * 1024;
    const chunks = [];
    const hash = crypto.createHash('sha256');
    let seed = crypto.createHash('sha256').update('rpc-interop').digest();
    for (let i = 0; i < 320; i++) {
      const chunk = new Uint8Array(chunkSize);
      for (let off = 0; off < chunkSize; off += 32) {
        seed = crypto.createHash('sha256').update(seed).digest();
        chunk.set(seed, off);
      }
      hash.update(chunk);
      chunks.push(chunk);
    }
    const bigSha = hash.digest('hex');
    const bigPath = `${dir}/big.bin`;
    const big = await api.files.writeFileStream(bigPath, bytesStream(chunks), sid);
    const serverSha = (await api.commands.execute(`sha256sum '${bigPath}' | cut -d' ' -f1`, sid)).stdout;

    const raw = await api.files.readFile(bigPath, sid, { encoding: 'none' });
    const content = raw.content;
    const isReadable = content instanceof ReadableStream;
    const readHash = crypto.createHash('sha256');
    let readBytes = 0;
    let readChunks = 0;
    for await (const chunk of content) {
      readHash.update(chunk);
      readBytes += chunk.byteLength;
      readChunks += 1;
    }
    const rawMeta = { ...raw, content: undefined };
    const rawText = await api.files.readFile(`${dir}/nested/small.txt`, sid, { encoding: 'none' });
    const rawTextContent = await readText(rawText.content);
    const rawMissing = await step(() => api.files.readFile(`${dir}/missing`, sid, { encoding: 'none' }));
    return {
      dir,
      small,
      smallRead,
      big,
      bigSize: chunkSize * 320,
      bigSha,
      serverSha,
      raw: { meta: rawMeta, isReadable, bytes: readBytes, chunks: readChunks, sha: readHash.digest('hex') },
      rawText: { size: rawText.size, mimeType: rawText.mimeType, text: rawTextContent.text },
      rawMissing,
    };
  },

  async processes({ api }) {
    const sid = `rpc-proc-${rand()}`;
    const tag = rand();
    const r = {};
    const id = `rpc-p-${tag}`;
    const cmd = 'echo out1; echo err1 >&2; sleep 0.3; echo out2';
    r.start = await api.processes.startProcess(cmd, sid, { processId: id });
    r.stream = await readSSE(await api.processes.streamProcessLogs(id));
    r.get = await api.processes.getProcess(id);
    r.logs = await api.processes.getProcessLogs(id);
    r.replay = await readSSE(await api.processes.streamProcessLogs(id));

    const longId = `rpc-long-${tag}`;
    r.startLong = await api.processes.startProcess('sleep 30', sid, { processId: longId });
    r.running = (await api.processes.getProcess(longId)).process.status;
    r.kill = await api.processes.killProcess(longId);
    r.afterKill = await until(async () => {
      const p = (await api.processes.getProcess(longId)).process;
      return p.status !== 'running' && p.status !== 'starting' ? p : null;
    });
    r.killAgain = await step(() => api.processes.killProcess(longId));

    const all = [`rpc-all1-${tag}`, `rpc-all2-${tag}`];
    for (const pid of all) await api.processes.startProcess('sleep 30', sid, { processId: pid });
    const list = await api.processes.listProcesses();
    r.list = list.processes.filter((p) => p.id.endsWith(tag));
    r.listHasSuccess = list.success;
    r.killAll = await api.processes.killAllProcesses();
    r.afterKillAll = [];
    for (const pid of all) {
      const done = await until(async () => {
        const p = (await api.processes.getProcess(pid)).process;
        return p.status !== 'running' && p.status !== 'starting' ? p : null;
      });
      r.afterKillAll.push(done.ok ? done.value.status : 'still running');
    }
    r.getMissing = await step(() => api.processes.getProcess(`rpc-nope-${tag}`));
    r.killMissing = await step(() => api.processes.killProcess(`rpc-nope-${tag}`));
    r.streamMissing = await step(() => api.processes.streamProcessLogs(`rpc-nope-${tag}`));
    r.startEmpty = await step(() => api.processes.startProcess('', sid));
    return r;
  },

  async utils({ api }) {
    const id = `rpc-sess-${rand()}`;
    const r = {};
    r.ping = await api.utils.ping();
    r.version = await api.utils.getVersion();
    r.commands = await api.utils.getCommands();
    r.create = await api.utils.createSession({ id, env: { SESS_VAR: 'sv' }, cwd: '/tmp' });
    r.duplicate = await step(() => api.utils.createSession({ id }));
    r.inSession = await api.commands.execute('echo "$SESS_VAR"; pwd', id);
    r.list = await api.utils.listSessions();
    r.delete = await api.utils.deleteSession(id);
    r.listAfter = await api.utils.listSessions();
    r.deleteMissing = await step(() => api.utils.deleteSession(`rpc-no-such-${rand()}`));
    r.recreate = await api.utils.createSession({ id });
    r.afterRecreate = await api.commands.execute('echo "[$SESS_VAR]"', id);
    await api.utils.deleteSession(id);
    return { id, ...r };
  },

  async watch_port({ api }) {
    const sid = `rpc-port-${rand()}`;
    const port = await freePort();
    const tcp = await api.ports.watchPort({ port, mode: 'tcp', interval: 100 });
    const http = await api.ports.watchPort({ port, mode: 'http', path: '/', interval: 100 });
    await sleep(300); // both watchers poll a closed port for a while
    const proc = await api.processes.startProcess(`python3 -m http.server ${port} --bind 127.0.0.1`, sid, {
      cwd: '/tmp',
    });
    const [tcpEvents, httpEvents] = await Promise.all([readSSE(tcp), readSSE(http)]);
    // a port watch tied to a process that exits
    const exiting = await api.processes.startProcess('sleep 0.3; exit 5', sid);
    const other = await freePort();
    const exited = await readSSE(
      await api.ports.watchPort({ port: other, mode: 'tcp', processId: exiting.processId, interval: 100 }),
    );
    await api.processes.killProcess(proc.processId);
    return { port, tcp: tcpEvents.events, http: httpEvents.events, exited: { port: other, events: exited.events } };
  },

  async greeter({ api }) {
    const hello = await api.greeter.hello('bob', true);
    const plain = await api.greeter.hello('amy');
    const refused = await step(() => api.greeter.refuse('busy day'));
    const count = await readSSE(await api.greeter.count(3));
    const named = await api.call('greeter', 'hello', { name: 'cy', excited: true });
    const badArg = await step(() => api.greeter.count(-1));
    return { hello, plain, refused, count: count.events, named, badArg };
  },

  // over HTTP batch: each connect() is one session, i.e. one POST carrying every call made on it
  async batch({ connect }) {
    const sid = `rpc-batch-${rand()}`;
    const first = connect();
    const [ping, hi, fail, missing] = await Promise.all([
      first.utils.ping(),
      first.commands.execute('echo hi', sid),
      first.commands.execute('echo nope >&2; (exit 2)', sid),
      step(() => first.files.readFile('/nonexistent/rpc-batch.txt', sid)),
    ]);
    const second = connect();
    const [exported, greeting] = await Promise.all([
      second.commands.execute('export B=1; echo set', sid),
      second.greeter.hello('batch'),
    ]);
    const third = connect();
    const persisted = await third.commands.execute('echo "$B"', sid);
    return { ping, hi, fail, missing, exported, greeting, persisted };
  },

  async pipelining({ api }) {
    const tag = rand();
    const commands = api.commands; // not awaited: the call below is pipelined on the getter
    const piped = await commands.execute('echo piped', `rpc-pipe-${tag}`);
    const pipedFrames = sentFrames.map((f) => JSON.parse(f));
    const sessions = Array.from({ length: 5 }, (_, k) => `rpc-pipe-${tag}-${k}`);
    await Promise.all(sessions.map((s, k) => api.commands.execute(`export S=${k}`, s)));
    const started = Date.now();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => api.commands.execute(`echo "$S-${i}"`, sessions[i % 5])),
    );
    return {
      piped,
      pipedFrames,
      elapsedMs: Date.now() - started,
      stdout: results.map((x) => x.stdout),
      exitCodes: results.map((x) => x.exitCode),
      sessionIds: results.map((x) => x.sessionId ?? null),
    };
  },

  async malformed({ api }) {
    const before = await api.utils.ping(); // this connection is open before the other one aborts
    const frames = [];
    const closed = await new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl);
      ws.on('open', () => ws.send(JSON.stringify(['bogus'])));
      ws.on('message', (data) => frames.push(data.toString()));
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      ws.on('error', reject);
    });
    const alive = await api.commands.execute('echo alive', `rpc-alive-${rand()}`);
    return { before, frames: frames.map((f) => JSON.parse(f)), closed, alive };
  },
};

// ------------------------------------------------------------------------------------------------

async function main() {
  const run = scenarios[scenario];
  if (run === undefined) throw new Error(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(', ')}`);
  const opened = [];
  const connect = () => {
    const stub = batch ? newHttpBatchRpcSession(httpUrl) : newWebSocketRpcSession(wsUrl, new ClientMain());
    opened.push(stub);
    return stub;
  };
  const api = batch ? null : connect();
  try {
    return await run({ api, connect, batch });
  } finally {
    for (const stub of opened) stub[Symbol.dispose]();
  }
}

try {
  const result = await main();
  emit({ scenario, batch, result });
  process.exit(0);
} catch (err) {
  emit({ scenario, batch, error: { ...describeError(err), stack: err?.stack } });
  process.exit(1);
}
