#!/usr/bin/env node
// Interop with node's `ws` package (strict: it fails the connection on any
// RFC 6455 violation by the server): echo of text/binary/fragmented/large
// messages, ping/pong, close codes, many clients, SIGTERM drain.
//
// Usage: node test_node_ws.mjs SERVER_BINARY NODE_PREFIX
//   NODE_PREFIX: where `npm install --prefix NODE_PREFIX ws` put node_modules.
// A missing `ws` is a failure (exit 1), never a skip.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

const [serverArg, nodePrefix] = process.argv.slice(2);
const serverBin = serverArg && path.resolve(serverArg);
if (!serverBin || !nodePrefix) {
  console.log('usage: node test_node_ws.mjs SERVER_BINARY NODE_PREFIX');
  process.exit(2);
}
let WebSocket;
try {
  WebSocket = createRequire(path.join(path.resolve(nodePrefix), 'node_modules', 'x.js'))('ws');
} catch (e) {
  console.log(`FAIL cannot load 'ws' from ${nodePrefix}: ${e.message}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

const MAX = 65536;
const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'WARNING: ThreadSanitizer',
  'runtime error:', 'UndefinedBehaviorSanitizer'];

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`timeout (${ms} ms): ${what}`)), ms);
  })]).finally(() => clearTimeout(t));
}

// ---- server ------------------------------------------------------------------

function startServer(extra = []) {
  const args = ['--dev', '--diag', '--listen', '127.0.0.1:0', '--tls-listen', '127.0.0.1:0', '--cores', '2', ...extra];
  const proc = spawn(serverBin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const srv = { proc, stderr: '', port: 0, workers: 0, exit: null };
  srv.exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
    srv.exit = { code, signal };
    resolve(srv.exit);
  }));
  return withTimeout(new Promise((resolve, reject) => {
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => {
      srv.stderr += d;
      const m = srv.stderr.match(/listening on ws:\/\/[^:]+:(\d+)\/ws with (\d+) workers/);
      if (m && !srv.port) {
        srv.port = Number(m[1]);
        srv.workers = Number(m[2]);
        resolve(srv);
      }
    });
    proc.on('error', reject);
    proc.on('exit', () => { if (!srv.port) reject(new Error(`server exited early:\n${srv.stderr}`)); });
  }), 10000, 'server start');
}

function parseStats(text) {
  const out = {};
  for (const m of text.matchAll(/stats (?:worker=(\d+):|total:)([^\n]*)/g)) {
    const d = {};
    for (const kv of m[2].matchAll(/(\w+)=([0-9.]+)/g)) d[kv[1]] = Number(kv[2]);
    out[m[1] ?? 'total'] = d;
  }
  return out;
}

async function stopServer(srv, { alreadySignalled = false } = {}) {
  if (!alreadySignalled && srv.exit === null) srv.proc.kill('SIGTERM');
  const ex = await withTimeout(srv.exited, 20000, 'server exit after SIGTERM');
  await new Promise((r) => setImmediate(r));
  for (const p of SANITIZER) {
    assert(!srv.stderr.includes(p), `sanitizer report in server stderr:\n${srv.stderr}`);
  }
  assert(ex.signal === null, `server killed by ${ex.signal}:\n${srv.stderr}`);
  assert(ex.code === 0, `server exited with ${ex.code}:\n${srv.stderr}`);
  const stats = parseStats(srv.stderr);
  assert(stats.total, `no stats total line:\n${srv.stderr}`);
  for (let i = 0; i < srv.workers; i++) assert(stats[String(i)], `no stats for worker ${i}`);
  return stats;
}

// ---- client helpers -------------------------------------------------------------

function open(srv, pathname = '/echo', opts = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.port}${pathname}`, { maxPayload: 1 << 22, ...opts });
  ws.inbox = [];
  ws.waiters = [];
  ws.closed = new Promise((resolve) => ws.on('close', (code, reason) => {
    resolve({ code, reason: reason.toString() });
    for (const w of ws.waiters.splice(0)) w.reject(new Error(`closed with ${code} ${reason}`));
  }));
  ws.on('message', (data, isBinary) => {
    const m = { data: Buffer.from(data), isBinary };
    const w = ws.waiters.shift();
    if (w) w.resolve(m); else ws.inbox.push(m);
  });
  ws.errors = [];
  ws.on('error', (e) => ws.errors.push(e));
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  }), 5000, `open ${pathname}`);
}

function recv(ws, ms = 5000) {
  if (ws.inbox.length) return Promise.resolve(ws.inbox.shift());
  return withTimeout(new Promise((resolve, reject) => ws.waiters.push({ resolve, reject })), ms, 'recv');
}

function send(ws, data, opts = {}) {
  return new Promise((resolve, reject) => ws.send(data, opts, (e) => (e ? reject(e) : resolve())));
}

async function echo(ws, data, binary) {
  await send(ws, data, { binary });
  const m = await recv(ws);
  const want = Buffer.isBuffer(data) ? data : Buffer.from(data);
  assert(m.isBinary === binary, `echo type: binary=${m.isBinary}, want ${binary}`);
  assert(m.data.equals(want), `echo mismatch: ${m.data.length} bytes, want ${want.length}`);
}

async function closeNormally(ws, code = 1000, reason = '') {
  ws.close(code, reason);
  const c = await withTimeout(ws.closed, 5000, 'close');
  assert(c.code === code, `close code ${c.code}, want ${code}`);
  assert(ws.errors.length === 0, `ws errors: ${ws.errors}`);
}

// ---- tests --------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
let srv;

test('no permessage-deflate negotiated', async () => {
  const ws = await open(srv, '/echo', { perMessageDeflate: true });
  assert(ws.extensions === '', `extensions: ${JSON.stringify(ws.extensions)}`);
  assert(ws.protocol === '', `protocol: ${ws.protocol}`);
  await echo(ws, 'x'.repeat(1000), false);
  await closeNormally(ws);
});

test('echo text sizes', async () => {
  const ws = await open(srv);
  for (const n of [0, 1, 125, 126, 127, 65535, 65536]) await echo(ws, 't'.repeat(n), false);
  await echo(ws, 'κόσμε 😀 '.repeat(100), false);
  await closeNormally(ws);
});

test('echo binary sizes', async () => {
  const ws = await open(srv);
  for (const n of [0, 1, 125, 126, 127, 65535, 65536]) await echo(ws, randomBytes(n), true);
  await closeNormally(ws);
});

test('fragmented messages', async () => {
  const ws = await open(srv);
  // text, with a 4-byte code point split across fragments
  const smile = Buffer.from('😀');
  await send(ws, Buffer.concat([Buffer.from('frag '), smile.subarray(0, 1)]), { binary: false, fin: false });
  await send(ws, smile.subarray(1, 3), { fin: false });
  await send(ws, Buffer.concat([smile.subarray(3), Buffer.from(' end')]), { fin: true });
  let m = await recv(ws);
  assert(!m.isBinary && m.data.toString() === 'frag 😀 end', `got ${m.data}`);
  // binary in 64 fragments of 1000 bytes
  const parts = Array.from({ length: 64 }, () => randomBytes(1000));
  for (let i = 0; i < parts.length; i++) {
    await send(ws, parts[i], { binary: true, fin: i === parts.length - 1 });
  }
  m = await recv(ws);
  assert(m.isBinary && m.data.equals(Buffer.concat(parts)), 'binary reassembly');
  // pings between fragments
  await send(ws, Buffer.from('a'), { binary: false, fin: false });
  const pong = new Promise((r) => ws.once('pong', r));
  ws.ping(Buffer.from('mid'));
  assert((await withTimeout(pong, 3000, 'pong')).toString() === 'mid', 'pong payload');
  await send(ws, Buffer.from('b'), { fin: true });
  m = await recv(ws);
  assert(m.data.toString() === 'ab', `got ${m.data}`);
  await closeNormally(ws);
});

test('large: max accepted, max+1 closes 1009', async () => {
  let ws = await open(srv);
  await echo(ws, randomBytes(MAX), true);
  await echo(ws, 'L'.repeat(MAX), false);
  await send(ws, randomBytes(MAX + 1), { binary: true });
  let c = await withTimeout(ws.closed, 5000, 'close 1009');
  assert(c.code === 1009, `close ${c.code}`);
  ws = await open(srv);
  await send(ws, Buffer.alloc(40000, 97), { binary: false, fin: false });
  await send(ws, Buffer.alloc(MAX - 40000 + 1, 98), { fin: true });
  c = await withTimeout(ws.closed, 5000, 'close 1009 fragmented');
  assert(c.code === 1009, `close ${c.code}`);
});

test('ping/pong', async () => {
  const ws = await open(srv);
  for (const p of [Buffer.alloc(0), Buffer.from('hello'), randomBytes(125)]) {
    const pong = new Promise((r) => ws.once('pong', r));
    ws.ping(p);
    const got = await withTimeout(pong, 3000, 'pong');
    assert(Buffer.from(got).equals(p), 'pong payload differs');
  }
  await closeNormally(ws);
});

test('close codes echoed', async () => {
  for (const [code, reason] of [[1000, ''], [1001, 'away'], [3000, 'app'], [4999, 'κόσμε']]) {
    const ws = await open(srv);
    await echo(ws, 'hi', false);
    await closeNormally(ws, code, reason);
  }
});

test('100 concurrent clients, both workers, then SIGTERM → 1001', async () => {
  const own = await startServer();
  let stats;
  try {
    const clients = await Promise.all(Array.from({ length: 100 }, () => open(own)));
    await Promise.all(clients.map(async (ws, i) => {
      for (let j = 0; j < 5; j++) {
        await echo(ws, `c${i}m${j}`.repeat(1 + j * 100), j % 2 === 1);
      }
    }));
    own.proc.kill('SIGTERM');
    const closes = await withTimeout(Promise.all(clients.map((ws) => ws.closed)), 5000, 'drain');
    for (const c of closes) assert(c.code === 1001, `drain close ${c.code}`);
    stats = await stopServer(own, { alreadySignalled: true });
  } finally {
    if (own.exit === null) own.proc.kill('SIGKILL');
  }
  const acc = [0, 1].map((i) => stats[String(i)].accepts);
  assert(acc[0] > 0 && acc[1] > 0, `accepts per worker ${acc}`);
  assert(acc[0] + acc[1] === 100, `accepts ${acc}`);
  assert(stats.total.msgs_in === 500 && stats.total.msgs_out === 500, JSON.stringify(stats.total));
});

// ---- runner ----------------------------------------------------------------------

let passed = 0;
let failed = 0;
try {
  srv = await startServer();
} catch (e) {
  console.log(`FAIL server start\n${e.stack}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
for (const t of tests) {
  const t0 = Date.now();
  try {
    await withTimeout(t.fn(), 30000, t.name);
    passed++;
    console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${t.name}\n${e.stack}`);
  }
}
try {
  await stopServer(srv);
  passed++;
  console.log('ok   server stopped cleanly');
} catch (e) {
  failed++;
  console.log(`FAIL server stop\n${e.stack}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
