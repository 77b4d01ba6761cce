// Records the conformance vectors in vectors/: the real capnweb talking to itself.
//
//   node record_vectors.mjs [SCENARIO...]
//
// For every scenario of capnweb_client.mjs (over WebSocket, and over HTTP batch where the scenario
// has batch: true) this starts a fresh capnweb_server.mjs (so connection numbers and IDs start
// afresh), runs capnweb_client.mjs against it, stops the server and writes the server's transcript
// to vectors/<scenario>.<ws|batch>.jsonl, preceded by one {"meta": {...}} line. See vectors/README.md.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(HERE, 'vectors');
const capnwebVersion = JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/capnweb/package.json'), 'utf8')).version;
const wsVersion = JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/ws/package.json'), 'utf8')).version;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(file, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
    await sleep(20);
  }
  throw new Error(`no port file ${file} after ${ms} ms`);
}

async function record(name, transport) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'capnweb-vec-'));
  const portFile = path.join(dir, 'port');
  const transcript = path.join(dir, 'transcript.jsonl');
  const server = spawn(process.execPath, [path.join(HERE, 'capnweb_server.mjs'), portFile, transcript], {
    cwd: HERE,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise((resolve) => server.on('exit', resolve));
  try {
    const port = await waitFor(portFile, 10000);
    const args = [path.join(HERE, 'capnweb_client.mjs'), `ws://127.0.0.1:${port}/rpc`, name];
    if (transport === 'batch') args.push('--batch');
    const client = spawnSync(process.execPath, args, { cwd: HERE, encoding: 'utf8', timeout: 60000 });
    const line = client.stdout.split('\n').find((l) => l.startsWith('{'));
    if (!line) throw new Error(`${name}/${transport}: no result\n${client.stdout}\n${client.stderr}`);
    await sleep(200); // let the server log the last frames and the close
    server.kill('SIGTERM');
    await exited;
    const meta = {
      scenario: name,
      transport,
      capnweb: capnwebVersion,
      ws: wsVersion,
      node: process.version,
      result: JSON.parse(line),
    };
    const body = fs.readFileSync(transcript, 'utf8');
    const file = path.join(OUT, `${name}.${transport}.jsonl`);
    fs.writeFileSync(file, JSON.stringify({ meta }) + '\n' + body);
    console.log(`${path.relative(HERE, file)}: ${body.split('\n').filter(Boolean).length} lines, result ${line}`);
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const list = JSON.parse(
  spawnSync(process.execPath, [path.join(HERE, 'capnweb_client.mjs'), '--list'], { cwd: HERE, encoding: 'utf8' }).stdout,
);
const wanted = process.argv.slice(2);
fs.mkdirSync(OUT, { recursive: true });
for (const [name, { batch }] of Object.entries(list)) {
  if (wanted.length && !wanted.includes(name)) continue;
  await record(name, 'ws');
  if (batch) await record(name, 'batch');
}
