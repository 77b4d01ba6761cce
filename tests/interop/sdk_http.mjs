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
// Scenario arguments after the scenario name (ports, paths), e.g. for git_checkout and port_watch.
const scenarioArgs = process.argv.slice(4);
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

  // args: <repo root holding src/> <port answering 404 "Repository not found."> <port that never answers>
  async git_checkout(client) {
    const [root, notFoundPort, stallPort] = scenarioArgs;
    const clone = await step(() =>
      client.git.checkout(`file://${root}/src`, 'interop-git', { branch: 'dev', targetDir: `${root}/out`, depth: 1 }),
    );
    const missing = await step(() => client.git.checkout(`${root}/missing`, 'interop-git', { targetDir: `${root}/o1` }));
    const notFound = await step(() =>
      client.git.checkout(`http://127.0.0.1:${notFoundPort}/x.git`, 'interop-git', { targetDir: `${root}/o2` }),
    );
    const slow = await step(() =>
      client.git.checkout(`http://user:hunter2secret@127.0.0.1:${stallPort}/x.git`, 'interop-git', {
        targetDir: `${root}/o3`,
        timeoutMs: 300,
      }),
    );
    const badUrl = await step(() => client.git.checkout('--upload-pack=x', 'interop-git', { targetDir: `${root}/o4` }));
    return { clone, missing, notFound, slow, badUrl };
  },

  // args: <port answering HTTP 200> <port nobody listens on>
  async port_watch(client) {
    const [openPort, closedPort] = scenarioArgs.map(Number);
    const http = await collectEvents(
      await client.ports.watchPort({ port: openPort, mode: 'http', path: '/', statusMin: 200, statusMax: 399, interval: 100 }),
    );
    const tcp = await collectEvents(await client.ports.watchPort({ port: openPort, mode: 'tcp' }));
    const unknown = await collectEvents(
      await client.ports.watchPort({ port: closedPort, mode: 'tcp', processId: 'interop-no-such-process' }),
    );
    const processId = `interop-pw-${process.pid}-${Date.now()}`;
    await client.processes.startProcess('exit 3', 'interop-pw', { processId });
    const exited = await collectEvents(await client.ports.watchPort({ port: closedPort, mode: 'tcp', processId }));
    const invalid = await step(() => client.ports.watchPort({ port: 70000, mode: 'tcp' }));
    return { http, tcp, unknown, exited, invalid };
  },

  // Files. args: <an empty scratch directory on the server's host>
  async files_basic(client) {
    const [root] = scenarioArgs;
    const sid = 'interop-files';
    const bytes = Buffer.from(Uint8Array.from({ length: 300 }, (_, i) => i % 256));
    const mkdir = await client.files.mkdir(`${root}/sub/deep`, sid, { recursive: true });
    const writeText = await client.files.writeFile(`${root}/a.txt`, 'héllo ✓', sid);
    const readText = await client.files.readFile(`${root}/a.txt`, sid);
    const writeBinary = await client.files.writeFile(`${root}/b.bin`, bytes.toString('base64'), sid, { encoding: 'base64' });
    const { content, ...readBinary } = await client.files.readFile(`${root}/b.bin`, sid);
    const asBase64 = await client.files.readFile(`${root}/a.txt`, sid, { encoding: 'base64' });
    const list = await client.files.listFiles(root, sid);
    const listAll = await client.files.listFiles(root, sid, { recursive: true, includeHidden: true });
    const existsYes = await client.files.exists(`${root}/a.txt`, sid);
    const existsNo = await client.files.exists(`${root}/nope`, sid);
    const rename = await client.files.renameFile(`${root}/a.txt`, `${root}/c.txt`, sid);
    const move = await client.files.moveFile(`${root}/c.txt`, `${root}/sub/c.txt`, sid);
    const deleted = await client.files.deleteFile(`${root}/b.bin`, sid);
    const after = await client.files.listFiles(root, sid, { recursive: true });
    return {
      mkdir, writeText, readText, writeBinary, readBinary,
      binaryMatches: Buffer.from(content, 'base64').equals(bytes),
      asBase64: { ...asBase64, decoded: Buffer.from(asBase64.content, 'base64').toString('utf8') },
      list, listAll, existsYes, existsNo, rename, move, deleted, after,
      modifiedAtParses: listAll.files.map((f) => Number.isFinite(Date.parse(f.modifiedAt))),
    };
  },

  async files_stream(client) {
    const [root] = scenarioArgs;
    const sid = 'interop-files';
    const { collectFile } = await import('@cloudflare/sandbox');
    const bytes = Buffer.from(Uint8Array.from({ length: 150000 }, (_, i) => (i * 7919) % 251));
    await client.files.writeFile(`${root}/s.bin`, bytes.toString('base64'), sid, { encoding: 'base64' });
    const text = 'aé✓'.repeat(30000);
    await client.files.writeFile(`${root}/s.txt`, text, sid);
    const events = await collectEvents(await client.files.readFileStream(`${root}/s.bin`, sid));
    const chunks = events.filter((e) => e.type === 'chunk');
    const reassembled = Buffer.concat(chunks.map((e) => Buffer.from(e.data, 'base64')));
    const binary = await collectFile(await client.files.readFileStream(`${root}/s.bin`, sid));
    const textFile = await collectFile(await client.files.readFileStream(`${root}/s.txt`, sid));
    const missing = await collectEvents(await client.files.readFileStream(`${root}/missing`, sid));
    const missingCollected = await step(async () => collectFile(await client.files.readFileStream(`${root}/missing`, sid)));
    return {
      types: events.map((e) => e.type),
      metadata: events[0],
      complete: events[events.length - 1],
      chunkLengths: chunks.map((e) => e.data.length),
      matches: reassembled.equals(bytes),
      collectedBinary: { metadata: binary.metadata, matches: Buffer.from(binary.content).equals(bytes) },
      collectedText: { metadata: textFile.metadata, matches: textFile.content === text },
      missing,
      missingCollected,
    };
  },

  async files_errors(client) {
    const [root] = scenarioArgs;
    const sid = 'interop-files';
    await client.files.mkdir(`${root}/dir`, sid);
    await client.files.writeFile(`${root}/file`, 'x', sid);
    return {
      readMissing: await step(() => client.files.readFile(`${root}/missing.txt`, sid)),
      deleteDir: await step(() => client.files.deleteFile(`${root}/dir`, sid)),
      listFile: await step(() => client.files.listFiles(`${root}/file`, sid)),
      listMissing: await step(() => client.files.listFiles(`${root}/missing`, sid)),
      mkdirNoParent: await step(() => client.files.mkdir(`${root}/no/parent`, sid)),
      mkdirExists: await step(() => client.files.mkdir(`${root}/dir`, sid)),
      renameMissing: await step(() => client.files.renameFile(`${root}/missing`, `${root}/x`, sid)),
      moveMissing: await step(() => client.files.moveFile(`${root}/missing`, `${root}/x`, sid)),
      badBase64: await step(() => client.files.writeFile(`${root}/b`, 'not base64!', sid, { encoding: 'base64' })),
      nulPath: await step(() => client.files.readFile(`${root}/a\u0000b`, sid)),
    };
  },

  // Processes: a short one streamed to its end, then read back.
  async processes_basic(client) {
    const sid = 'interop-proc';
    const processId = `interop-p1-${process.pid}-${Date.now()}`;
    const start = await client.processes.startProcess("printf 'one\\n'; echo two >&2; printf three; exit 0", sid, {
      processId,
    });
    const events = await collectEvents(await client.processes.streamProcessLogs(processId));
    const got = await client.processes.getProcess(processId);
    const logs = await client.processes.getProcessLogs(processId);
    const list = await client.processes.listProcesses();
    const failingId = `${processId}-fails`;
    await client.processes.startProcess('echo bad >&2; exit 3', sid, { processId: failingId });
    const failingEvents = await collectEvents(await client.processes.streamProcessLogs(failingId));
    const failing = await client.processes.getProcess(failingId);
    const listed = list.processes.find((p) => p.id === processId);
    return {
      start, events, got, logs, failingEvents, failing,
      listed: listed ?? null,
      listSuccess: list.success,
      datesParse: [got.process.startTime, got.process.endTime].map((d) => Number.isFinite(Date.parse(d))),
    };
  },

  // args: <a unique fractional number of seconds, e.g. 600.12345>
  async processes_kill(client) {
    const [seconds] = scenarioArgs;
    const sid = 'interop-proc';
    const processId = `interop-sleep-${process.pid}-${Date.now()}`;
    const start = await client.processes.startProcess(`sleep ${seconds}`, sid, { processId });
    const running = await client.processes.getProcess(processId);
    const kill = await client.processes.killProcess(processId);
    const killed = await client.processes.getProcess(processId);
    const streamAfter = await collectEvents(await client.processes.streamProcessLogs(processId));
    const killAgain = await step(() => client.processes.killProcess(processId));
    // kill-all ends every running process (two more sleeps here).
    const others = [`${processId}-a`, `${processId}-b`];
    for (const id of others) await client.processes.startProcess(`sleep ${seconds}`, sid, { processId: id });
    const killAll = await client.processes.killAllProcesses();
    const othersAfter = await Promise.all(others.map((id) => client.processes.getProcess(id)));
    return { start, running, kill, killed, streamAfter, killAgain, killAll, othersAfter };
  },

  async processes_errors(client) {
    const id = 'interop-no-such-process';
    return {
      get: await step(() => client.processes.getProcess(id)),
      kill: await step(() => client.processes.killProcess(id)),
      logs: await step(() => client.processes.getProcessLogs(id)),
      stream: await step(() => client.processes.streamProcessLogs(id)),
      emptyCommand: await step(() => client.processes.startProcess('   ', 'interop-proc')),
      badId: await step(() => client.processes.startProcess('true', 'interop-proc', { processId: '../x' })),
    };
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
