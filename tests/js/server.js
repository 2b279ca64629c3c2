'use strict';
// Starts and stops the tidings server binary for the tests.
//
//   const srv = await start();                 // fresh db in a new temp dir, port 0
//   const again = await start({ db: srv.db, port: srv.port }); // restart on the same db/port
//   await srv.stop({ signal: 'SIGKILL' });     // default SIGTERM; resolves on exit
//   await stopAll();                           // in after/afterEach hooks
//
// Contract with the server: `BIN --host 127.0.0.1 --port P --db FILE` prints exactly one
// stdout line `listening on http://127.0.0.1:PORT` (`https://` with --tls-cert) once it accepts
// connections.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const BIN = process.env.TIDINGS_BIN
  ? path.resolve(process.env.TIDINGS_BIN)
  : path.resolve(__dirname, '../../target/debug/tidings');
const LISTENING = /listening on (https?):\/\/[^:]+:(\d+)/;
const START_TIMEOUT_MS = 15000;
const STOP_TIMEOUT_MS = 10000;

const running = new Set();
const tmpDirs = new Set();

function checkBinary() {
  let st;
  try {
    st = fs.statSync(BIN);
  } catch {
    throw new Error(
      `tidings server binary not found at ${BIN}\n` +
        `Build it first (\`cargo build\` at the repository root) or set TIDINGS_BIN to its path.`,
    );
  }
  if (!st.isFile()) throw new Error(`TIDINGS_BIN ${BIN} is not a file`);
}

/** A new temp dir holding nothing yet; returns the path of chat.redb inside it. */
function freshDb() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-test-'));
  tmpDirs.add(dir);
  return path.join(dir, 'chat.redb');
}

/**
 * Start the server. Options: db (file path, default: fresh temp file), port (default 0),
 * timeoutMs (how long to wait for the listening line), extraArgs (more command-line flags). Resolves to
 * { url, port, db, proc, stop({signal, timeoutMs}), exited } once it is listening.
 */
function start({ db = freshDb(), port = 0, timeoutMs = START_TIMEOUT_MS, extraArgs = [] } = {}) {
  checkBinary();
  const args = ['--host', '127.0.0.1', '--port', String(port), '--db', db, ...extraArgs];
  const proc = spawn(BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.TIDINGS_TEST_RUST_LOG || 'warn' },
  });
  const tag = `[tidings ${proc.pid}]`;
  let stderrTail = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => {
    stderrTail = (stderrTail + chunk).slice(-4000);
    process.stderr.write(chunk.replace(/^(?=.)/gm, `${tag} `));
  });

  const exited = new Promise((resolve) => {
    const settle = (info) => {
      running.delete(server);
      resolve(info);
    };
    proc.once('exit', (code, signal) => settle({ code, signal }));
    proc.once('error', (error) => settle({ code: null, signal: null, error }));
  });
  let adminUrl;
  const server = {
    proc,
    db,
    port: undefined,
    url: undefined,
    /** Resolves with the admin port's URL once its line (`admin on http://…`) is printed. */
    admin: new Promise((resolve) => {
      adminUrl = resolve;
    }),
    exited,
    stop: (opts) => stop(server, opts),
  };
  running.add(server);

  return new Promise((resolve, reject) => {
    let done = false;
    const fail = (msg) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      const tail = stderrTail.trim() ? `\n--- server stderr (tail) ---\n${stderrTail.trim()}` : '';
      reject(new Error(`${msg}\ncommand: ${BIN} ${args.join(' ')}${tail}`));
    };
    const timer = setTimeout(
      () => fail(`tidings did not print "listening on http://HOST:PORT" within ${timeoutMs} ms`),
      timeoutMs,
    );
    exited.then(({ code, signal, error }) =>
      fail(
        error
          ? `could not spawn tidings: ${error.message}`
          : `tidings exited (code ${code}, signal ${signal}) before printing its listening line`,
      ),
    );

    const lines = readline.createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      const admin = /^admin on (http:\/\/\S+)$/.exec(line);
      if (admin) return adminUrl(admin[1]);
      const m = done ? null : LISTENING.exec(line);
      if (!m) {
        if (line.trim()) process.stderr.write(`${tag} stdout: ${line}\n`);
        return;
      }
      done = true;
      clearTimeout(timer);
      server.port = Number(m[2]);
      server.url = `${m[1]}://127.0.0.1:${server.port}`;
      resolve(server);
    });
  });
}

/**
 * Stop a server: sends `signal` (SIGTERM by default, or SIGKILL) and waits for exit.
 * Rejects if a SIGTERM'd server has not exited within timeoutMs (it is SIGKILLed then).
 */
async function stop(server, { signal = 'SIGTERM', timeoutMs = STOP_TIMEOUT_MS } = {}) {
  const { proc } = server;
  if (proc.exitCode !== null || proc.signalCode !== null) return server.exited;
  proc.kill(signal);
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const first = await Promise.race([server.exited, timedOut]);
  clearTimeout(timer);
  if (first !== 'timeout') return first;
  proc.kill('SIGKILL');
  await server.exited;
  throw new Error(`tidings (pid ${proc.pid}) did not exit within ${timeoutMs} ms of ${signal}; killed`);
}

/** Kill every server still running (SIGKILL) and wait for them; for after/afterEach hooks. */
async function stopAll() {
  await Promise.all([...running].map((s) => stop(s, { signal: 'SIGKILL' })));
}

/** Remove the temp dirs created by freshDb() (only after their servers are stopped). */
function cleanup() {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
  tmpDirs.clear();
}

// Last-resort safety net: never leave a server behind when the test process exits.
function killAllNow() {
  for (const s of running) {
    try {
      s.proc.kill('SIGKILL');
    } catch {}
  }
}
process.on('exit', () => {
  killAllNow();
  cleanup();
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAllNow();
    process.kill(process.pid, signal); // the default action, now that the handler is gone
  });
}

module.exports = { BIN, start, stop, stopAll, freshDb, cleanup };
