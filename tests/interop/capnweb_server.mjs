// The real capnweb (0.12.0) as a Cap'n Web server, for interop tests of our Python engine.
//
//   node capnweb_server.mjs PORTFILE TRANSCRIPT
//
// Listens on 127.0.0.1 on a free port and writes that port to PORTFILE (atomically: a temporary
// file renamed into place). Serves Cap'n Web over WebSocket at /rpc and as HTTP batch at POST /rpc.
// Every frame of every connection is appended to TRANSCRIPT as one JSON line
//   {"conn": n, "dir": "c2s" | "s2c", "frame": "<the message text>"}
// (for HTTP batch, one line per request line and per response line; each POST is a connection);
// a WebSocket close is logged as {"conn": n, "dir": "close", "code": c, "reason": "..."}.
// SIGTERM / SIGINT: close everything and exit 0.

globalThis.WebSocket ??= (await import('ws')).WebSocket;

const fs = await import('node:fs');
const http = await import('node:http');
const { WebSocketServer } = await import('ws');
const { RpcTarget, newWebSocketRpcSession, nodeHttpBatchRpcResponse } = await import('capnweb');

const [portFile, transcriptFile] = process.argv.slice(2);
if (!portFile || !transcriptFile) {
  console.error('usage: node capnweb_server.mjs PORTFILE TRANSCRIPT');
  process.exit(2);
}
fs.writeFileSync(transcriptFile, '');

function log(record) {
  fs.appendFileSync(transcriptFile, JSON.stringify(record) + '\n');
}

class Counter extends RpcTarget {
  #value;
  #api;
  constructor(api, start) {
    super();
    this.#api = api;
    this.#value = start;
  }
  increment(n = 1) {
    this.#value += n;
    return this.#value;
  }
  get value() {
    return this.#value;
  }
  [Symbol.dispose]() {
    this.#api.counterDisposed();
  }
}

function chunkOf(size, fill) {
  return new Uint8Array(size).fill(fill & 0xff);
}

// One Api per connection (so disposal counts are per connection).
class Api extends RpcTarget {
  #disposed = 0;
  #client = null;

  setClient(stub) {
    this.#client = stub;
  }
  counterDisposed() {
    this.#disposed += 1;
  }

  add(a, b) {
    return a + b;
  }
  getUser(id) {
    return { id, name: 'user' + id, tags: ['tag' + id, 'user'] };
  }
  greet(name) {
    return 'hello, ' + name;
  }
  async callMe(cb, x) {
    return { got: await cb(x) };
  }
  makeCounter(i) {
    return new Counter(this, i);
  }
  fail() {
    const err = new RangeError('boom');
    err.code = 42;
    throw err;
  }
  echo(v) {
    return v;
  }
  listUsers() {
    return [
      { id: 1, name: 'ann' },
      { id: 2, name: 'bob' },
    ];
  }
  streamBytes(n) {
    let i = 0;
    return new ReadableStream({
      pull(controller) {
        if (i >= n) {
          controller.close();
          return;
        }
        controller.enqueue(new Uint8Array([i & 0xff, (i + 1) & 0xff, (i + 2) & 0xff]));
        i += 1;
      },
    });
  }
  bigStream(count, size) {
    // chunk i is `size` bytes, every byte equal to i % 256
    let i = 0;
    return new ReadableStream({
      pull(controller) {
        if (i >= count) {
          controller.close();
          return;
        }
        controller.enqueue(chunkOf(size, i));
        i += 1;
      },
    });
  }
  async upload(rs) {
    let total = 0;
    let chunks = 0;
    for await (const chunk of rs) {
      total += chunk.byteLength ?? String(chunk).length;
      chunks += 1;
    }
    return { total, chunks };
  }
  async slowUpload(rs, startMs, perChunkMs) {
    // reads nothing for startMs, then one chunk per perChunkMs: the sender must hold back
    await new Promise((resolve) => setTimeout(resolve, startMs));
    let total = 0;
    let chunks = 0;
    for await (const chunk of rs) {
      total += chunk.byteLength ?? String(chunk).length;
      chunks += 1;
      await new Promise((resolve) => setTimeout(resolve, perChunkMs));
    }
    return { total, chunks };
  }
  async writeTo(ws) {
    const writer = ws.getWriter();
    await writer.write('x1');
    await writer.write(new Uint8Array([9, 9]));
    await writer.close();
    return 'done';
  }
  async sleep(ms, v) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return v;
  }
  async callTarget(t, n) {
    return await t.increment(n);
  }
  async pingClient(x) {
    // server -> client call on the client's main object
    if (this.#client === null) throw new Error('no client main');
    return await this.#client.ping(x);
  }
  disposals() {
    return this.#disposed;
  }
}

let nextConn = 0;
const sockets = new Set();

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname !== '/rpc') {
    res.writeHead(404);
    res.end();
    return;
  }
  const conn = ++nextConn;
  // Listen to the body alongside capnweb (both listeners attach in this tick, so both see every
  // chunk), and capture the response body through res.end.
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString();
    if (body !== '') for (const line of body.split('\n')) log({ conn, dir: 'c2s', frame: line });
  });
  const end = res.end.bind(res);
  res.end = (data, ...rest) => {
    if (typeof data === 'string' && data !== '') {
      for (const line of data.split('\n')) log({ conn, dir: 's2c', frame: line });
    }
    return end(data, ...rest);
  };
  nodeHttpBatchRpcResponse(req, res, new Api()).catch((err) => {
    console.error('batch error', err);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname !== '/rpc') {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const conn = ++nextConn;
    sockets.add(ws);
    const send = ws.send.bind(ws);
    ws.send = (data, ...rest) => {
      log({ conn, dir: 's2c', frame: String(data) });
      return send(data, ...rest);
    };
    ws.on('message', (data, isBinary) => {
      log({ conn, dir: 'c2s', frame: isBinary ? '<binary>' : data.toString() });
    });
    ws.on('close', (code, reason) => {
      sockets.delete(ws);
      log({ conn, dir: 'close', code, reason: reason.toString() });
    });
    const api = new Api();
    const client = newWebSocketRpcSession(ws, api);
    api.setClient(client);
  });
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const tmp = `${portFile}.tmp${process.pid}`;
  fs.writeFileSync(tmp, String(port));
  fs.renameSync(tmp, portFile);
});

function shutdown() {
  for (const ws of sockets) ws.terminate();
  wss.close();
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
