// The sandbox's JavaScript/TypeScript executor: one REPL-like vm context per process.
//
// Protocol (line-delimited JSON): on stdin, first the token (a line of its own, read before any
// code runs: it is in no environment, so user code cannot learn it), then requests, one object a line:
//   {"op":"setup","id":N,"cwd":"/dir","env":{"K":"V"}}   apply a context's cwd and env
//   {"op":"run","id":N,"code":"...","language":"javascript"|"typescript"}
// Answers on stdout, each line starting with "\x1e" + the token (anything else on stdout is the
// user's own output, e.g. a child process's); a line's JSON has at most MAX_MESSAGE characters
// (a longer result or error is cut, saying so):
//   {"type":"ready","typescript":"strip"|"typescript"|null}
//   {"id":N,"type":"stdout"|"stderr","text":"..."}     console output, in chunks of 64 KiB
//   {"id":N,"type":"result","text":"...","json":...}   the value of the last expression
//   {"id":N,"type":"error","ename":"...","evalue":"...","traceback":[...]}
//   {"id":N,"type":"done","execution_count":K}
// SIGINT interrupts the running cell (synchronous code and awaited promises alike).
'use strict';

const fs = require('fs');
const vm = require('vm');
const util = require('util');
const path = require('path');
const readline = require('readline');
const { Console } = require('console');
const { Writable } = require('stream');
const Module = require('module');

let PREFIX = null; // "\x1e" + the token, once read
const CHUNK = 65536;
const MAX_MESSAGE = 8 * 1024 * 1024; // the server reads lines of up to 32 MiB
const KEEP = 65536; // characters of a cut string that are kept
const pause = new Int32Array(new SharedArrayBuffer(4));
const stdout = process.stdout; // made now (it makes descriptor 1 non-blocking: see rawWrite)

// Write all of text to stdout before returning, however long the server takes to read it: a cell
// that prints without pause then waits for the server, which reads as fast as the run's reader
// takes output, instead of its output piling up in this process (process.stdout would queue it in
// memory until the cell ends). The descriptor is non-blocking: EAGAIN means wait a millisecond and
// try again. Only while process.stdout still holds what user code wrote to it directly does a line
// go through it too, so that it comes after that output.
function rawWrite(text) {
  if (stdout.writableLength > 0) {
    stdout.write(text);
    return;
  }
  const data = Buffer.from(text);
  let done = 0;
  while (done < data.length) {
    try {
      done += fs.writeSync(1, data, done, data.length - done);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

function send(obj) {
  let line = JSON.stringify(obj);
  if (line.length > MAX_MESSAGE) line = JSON.stringify(cut(obj, line.length));
  rawWrite(PREFIX + line + '\n');
}

function cut(obj, size) {
  const note = `[sandbox: this ${obj.type} was ${size} characters of JSON, over the ${MAX_MESSAGE} it may have: cut]`;
  const out = { ...obj };
  for (const key of ['text', 'evalue']) {
    if (typeof out[key] === 'string' && out[key].length > KEEP) out[key] = out[key].slice(0, KEEP) + ' ' + note;
  }
  if ('json' in out) delete out.json;
  if (Array.isArray(out.traceback)) out.traceback = out.traceback.slice(0, 100).map((l) => String(l).slice(0, 4096));
  return out;
}

let current = null; // id of the running cell (console output outside a cell goes to the last one)
let last = null;
let count = 0;

function emitText(kind, text) {
  const id = current !== null ? current : last;
  for (let i = 0; i < text.length; i += CHUNK) send({ id, type: kind, text: text.slice(i, i + CHUNK) });
}

function stream(kind) {
  return new Writable({
    write(chunk, _encoding, callback) {
      emitText(kind, chunk.toString());
      callback();
    },
  });
}

// TypeScript: Node's own type stripping when it has it, else the typescript package if found.
let tsMode = null;
let transpile = null;
if (typeof Module.stripTypeScriptTypes === 'function') {
  tsMode = 'strip';
  transpile = (code) => Module.stripTypeScriptTypes(code, { mode: 'transform' });
} else {
  const where = [process.cwd(), path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules')];
  if (process.env.NODE_PATH) where.push(...process.env.NODE_PATH.split(path.delimiter));
  try {
    const ts = require(require.resolve('typescript', { paths: where }));
    tsMode = 'typescript';
    transpile = (code) =>
      ts.transpileModule(code, {
        compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS },
      }).outputText;
  } catch {
    // no transpiler: typescript contexts are refused by the server
  }
}

const sandbox = {
  console: new Console({ stdout: stream('stdout'), stderr: stream('stderr') }),
  process,
  Buffer,
  URL,
  URLSearchParams,
  TextEncoder,
  TextDecoder,
  AbortController,
  structuredClone,
  queueMicrotask,
  setTimeout,
  clearTimeout,
  setInterval,
  clearInterval,
  setImmediate,
  clearImmediate,
  fetch: globalThis.fetch,
  performance: globalThis.performance,
  module: { exports: {} },
};
sandbox.exports = sandbox.module.exports;
sandbox.require = Module.createRequire(path.join(process.cwd(), '[repl]'));
sandbox.global = sandbox;
const context = vm.createContext(sandbox);

let interruptCell = null;
process.on('SIGINT', () => {
  if (interruptCell) interruptCell();
});

function errorOf(e) {
  const isObj = e !== null && typeof e === 'object';
  const name = isObj && typeof e.name === 'string' ? e.name : 'Error';
  const message = isObj && 'message' in e ? String(e.message) : String(e);
  const stack = isObj && typeof e.stack === 'string' ? e.stack : `${name}: ${message}`;
  const lines = stack.split('\n');
  const ours = lines.findIndex((l) => l.includes('node:vm') || l.includes(__filename));
  return { ename: name, evalue: message, traceback: ours > 0 ? lines.slice(0, ours) : lines };
}

function resultOf(value) {
  const out = {
    text:
      typeof value === 'string'
        ? value
        : util.inspect(value, { depth: 4, maxArrayLength: 200, maxStringLength: 100000, breakLength: 100 }),
  };
  if (value !== null && typeof value === 'object') {
    try {
      const j = JSON.stringify(value);
      if (j !== undefined && j.length <= 1000000) out.json = JSON.parse(j);
    } catch {
      // not JSON: text only
    }
  }
  return out;
}

function compile(code, filename) {
  try {
    return new vm.Script(code, { filename });
  } catch (e) {
    // top-level await: run the cell as an async function (its declarations stay local)
    if (e && e.name === 'SyntaxError' && /\bawait\b/.test(code)) {
      return new vm.Script('(async () => {\n' + code + '\n})()', { filename, lineOffset: -1 });
    }
    throw e;
  }
}

async function run(msg) {
  current = last = msg.id;
  count += 1;
  const interrupted = new Promise((_, reject) => {
    interruptCell = () => reject(Object.assign(new Error('Execution interrupted'), { name: 'InterruptedError' }));
  });
  interrupted.catch(() => {});
  try {
    let code = String(msg.code);
    if (msg.language === 'typescript') {
      if (!transpile) throw new Error('No TypeScript transpiler is available');
      code = transpile(code);
    }
    const script = compile(code, `cell-${count}.${msg.language === 'typescript' ? 'ts' : 'js'}`);
    let value = script.runInContext(context, { breakOnSigint: true, displayErrors: false });
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
      value = await Promise.race([value, interrupted]);
    }
    if (value !== undefined) send({ id: msg.id, type: 'result', ...resultOf(value) });
    send({ id: msg.id, type: 'done', execution_count: count });
  } catch (e) {
    send({ id: msg.id, type: 'error', ...errorOf(e) });
    send({ id: msg.id, type: 'done', error: true });
  } finally {
    interruptCell = null;
    current = null;
  }
}

function setup(msg) {
  try {
    if (msg.cwd) {
      process.chdir(msg.cwd);
      sandbox.require = Module.createRequire(path.join(process.cwd(), '[repl]'));
    }
    for (const [k, v] of Object.entries(msg.env || {})) process.env[k] = String(v);
    send({ id: msg.id, type: 'done', execution_count: 0 });
  } catch (e) {
    send({ id: msg.id, type: 'error', ...errorOf(e) });
    send({ id: msg.id, type: 'done', error: true });
  }
}

let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (PREFIX === null) {
    PREFIX = '\x1e' + line;
    send({ type: 'ready', typescript: tsMode });
    return;
  }
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  queue = queue.then(() => (msg.op === 'setup' ? setup(msg) : run(msg)));
});
lines.on('close', () => process.exit(0));
