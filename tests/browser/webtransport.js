// The WebTransport checks a real browser runs against a server under test.
//
// Loaded by the page that quay_tests::browser serves on http://127.0.0.1 (a secure context), after
// a script that defines `QUAY`:
//   QUAY.base        "https://127.0.0.1:PORT", the WebTransport server
//   QUAY.hashes      serverCertificateHashes: [{algorithm: "sha-256", value: Uint8Array}]
//   QUAY.paths       the session paths, one per kind of session (see browser.rs)
//   QUAY.pageClose   {closeCode, reason} the page closes its session with
//   QUAY.pageCloseSessions  how many sessions the page opens and closes on paths.pageCloseMany
//   QUAY.serverClose {closeCode, reason} the server closes its session with
//   QUAY.checkTimeoutMs  how long one check may take
//
// Each check reports one JSON line `{"check": name, "ok": bool, "detail": string}` by POSTing it
// to /result; the last line is the check "done". The checks run one after another, each bounded by
// QUAY.checkTimeoutMs, so one that hangs is reported as failed and the others still run.
"use strict";

async function report(check, ok, detail) {
  const line = JSON.stringify({ check, ok, detail: String(detail) }) + "\n";
  await fetch("/result", { method: "POST", headers: { "content-type": "application/json" }, body: line });
}

function open(path) {
  const wt = new WebTransport(QUAY.base + path, { serverCertificateHashes: QUAY.hashes });
  // Both promises reject when the session fails; the checks that care await them.
  wt.ready.catch(() => {});
  wt.closed.catch(() => {});
  return wt;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// `n` bytes whose values depend on their position and on `seed`.
function pattern(n, seed) {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return bytes;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function describe(got, want) {
  if (got.length !== want.length) return `got ${got.length} bytes, want ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) return `byte ${i} is ${got[i]}, want ${want[i]}`;
  }
  return "equal";
}

async function readAll(readable) {
  const reader = readable.getReader();
  const chunks = [];
  let length = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.length;
  }
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

async function writeAll(writable, bytes) {
  const writer = writable.getWriter();
  await writer.write(bytes);
  await writer.close();
}

// Sends `bytes` on a new bidirectional stream and returns what comes back before its FIN.
async function echo(wt, bytes) {
  const stream = await wt.createBidirectionalStream();
  const [, got] = await Promise.all([writeAll(stream.writable, bytes), readAll(stream.readable)]);
  return got;
}

async function echoCheck(wt, size, seed) {
  const sent = pattern(size, seed);
  const start = performance.now();
  const got = await echo(wt, sent);
  const ms = (performance.now() - start).toFixed(1);
  if (!sameBytes(got, sent)) throw new Error(`echo of ${size} bytes: ${describe(got, sent)}`);
  return `${size} bytes echoed in ${ms} ms`;
}

const checks = [];
function check(name, body) {
  checks.push({ name, body });
}

// One session on QUAY.paths.echo serves the echo checks; it is opened by the first of them.
let echoSession = null;
async function echoSessionReady() {
  if (echoSession === null) echoSession = open(QUAY.paths.echo);
  await echoSession.ready;
  return echoSession;
}

check("bidi_echo_1k", async () => echoCheck(await echoSessionReady(), 1024, 1));

check("bidi_echo_1m", async () => echoCheck(await echoSessionReady(), 1024 * 1024, 2));

check("bidi_100_concurrent", async () => {
  const wt = await echoSessionReady();
  const start = performance.now();
  const results = await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      const sent = pattern(1000 + i, 100 + i);
      const got = await echo(wt, sent);
      if (!sameBytes(got, sent)) throw new Error(`stream ${i}: ${describe(got, sent)}`);
    }),
  );
  return `${results.length} streams echoed in ${(performance.now() - start).toFixed(1)} ms`;
});

// The page opens a unidirectional stream; the server answers with the same bytes on a
// unidirectional stream of its own.
check("uni_both_ways", async () => {
  const wt = await echoSessionReady();
  const sent = pattern(4096, 3);
  const start = performance.now();
  const incoming = wt.incomingUnidirectionalStreams.getReader();
  const stream = await wt.createUnidirectionalStream();
  await writeAll(stream, sent);
  const { value: readable, done } = await incoming.read();
  incoming.releaseLock();
  if (done) throw new Error("the server opened no unidirectional stream");
  const got = await readAll(readable);
  if (!sameBytes(got, sent)) throw new Error(`uni echo: ${describe(got, sent)}`);
  return `${sent.length} bytes out and back on uni streams in ${(performance.now() - start).toFixed(1)} ms`;
});

// Datagrams may be lost, so one is sent every 50 ms until an echo comes back.
check("datagram_echo", async () => {
  const wt = await echoSessionReady();
  const writer = wt.datagrams.writable.getWriter();
  const reader = wt.datagrams.readable.getReader();
  const sent = new Set();
  let n = 0;
  const start = performance.now();
  const send = async () => {
    const text = `quay datagram ${n++}`;
    sent.add(text);
    await writer.write(new TextEncoder().encode(text));
  };
  await send();
  const timer = setInterval(() => send().catch(() => {}), 50);
  try {
    const { value, done } = await reader.read();
    if (done) throw new Error("datagram stream ended");
    const text = new TextDecoder().decode(value);
    if (!sent.has(text)) throw new Error(`echo ${JSON.stringify(text)} was never sent`);
    return `${JSON.stringify(text)} echoed after ${n} sent, ${(performance.now() - start).toFixed(1)} ms`;
  } finally {
    clearInterval(timer);
    writer.releaseLock();
    reader.releaseLock();
  }
});

// The server opens a bidirectional stream, sends a greeting and FIN; the page reads it and answers
// on the same stream.
check("server_initiated_bidi", async () => {
  const wt = open(QUAY.paths.serverBidi);
  try {
    await wt.ready;
    const incoming = wt.incomingBidirectionalStreams.getReader();
    const { value: stream, done } = await incoming.read();
    if (done) throw new Error("the server opened no bidirectional stream");
    const greeting = new TextDecoder().decode(await readAll(stream.readable));
    if (greeting !== QUAY.serverBidiGreeting) {
      throw new Error(`greeting ${JSON.stringify(greeting)}, want ${JSON.stringify(QUAY.serverBidiGreeting)}`);
    }
    await writeAll(stream.writable, new TextEncoder().encode(QUAY.serverBidiReply));
    return `read ${JSON.stringify(greeting)}, answered`;
  } finally {
    // Give the reply time to leave before the session goes.
    await new Promise((resolve) => setTimeout(resolve, 100));
    wt.close();
  }
});

// The page closes with a code and reason; the server reports what it saw.
check("page_close", async () => {
  const wt = open(QUAY.paths.pageClose);
  await wt.ready;
  wt.close(QUAY.pageClose);
  const info = await wt.closed;
  return `closed locally with ${JSON.stringify(QUAY.pageClose)}; closed resolved ${JSON.stringify(info)}`;
});

// The page opens sessions one after another and closes each with a code and reason; the server
// counts what it saw. Firefox sends CONNECTION_CLOSE in the packet right after its close capsule,
// and the server must still report the capsule's code and reason every time.
check("page_close_many", async () => {
  const start = performance.now();
  for (let i = 0; i < QUAY.pageCloseSessions; i++) {
    const wt = open(QUAY.paths.pageCloseMany);
    try {
      await wt.ready;
    } catch (e) {
      throw new Error(`session ${i}: ready rejected: ${e}`);
    }
    wt.close(QUAY.pageClose);
    await wt.closed;
  }
  return `${QUAY.pageCloseSessions} sessions opened and closed with ${JSON.stringify(QUAY.pageClose)} in ${(performance.now() - start).toFixed(0)} ms`;
});

// The page asks the server to close (a unidirectional stream saying "close"), then expects the
// server's code and reason in `closed`.
check("server_close", async () => {
  const wt = open(QUAY.paths.serverClose);
  await wt.ready;
  const stream = await wt.createUnidirectionalStream();
  await writeAll(stream, new TextEncoder().encode("close"));
  let info;
  try {
    info = await wt.closed;
  } catch (e) {
    throw new Error(`closed rejected: ${e}`);
  }
  const want = QUAY.serverClose;
  if (info.closeCode !== want.closeCode || info.reason !== want.reason) {
    throw new Error(`closed resolved ${JSON.stringify(info)}, want ${JSON.stringify(want)}`);
  }
  return `closed resolved ${JSON.stringify(info)}`;
});

// The server answers the CONNECT with 403: `ready` must reject.
check("rejected_403", async () => {
  const wt = open(QUAY.paths.reject);
  try {
    await wt.ready;
  } catch (e) {
    return `ready rejected: ${e.name}: ${e.message}`;
  }
  wt.close();
  throw new Error("ready resolved for a session the server rejected");
});

(async () => {
  try {
    for (const { name, body } of checks) {
      const start = performance.now();
      try {
        const detail = await withTimeout(body(), QUAY.checkTimeoutMs, name);
        await report(name, true, `${detail} (${(performance.now() - start).toFixed(0)} ms)`);
      } catch (e) {
        await report(name, false, `${e && e.name ? e.name + ": " : ""}${e && e.message ? e.message : e}`);
      }
    }
    if (echoSession !== null) echoSession.close();
  } finally {
    await report("done", true, `${checks.length} checks run`);
  }
})();
