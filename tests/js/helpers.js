'use strict';
// Client-side helpers for the tests: sockets that are always closed, message recorders,
// and waits that are always bounded by a timeout.

const crypto = require('node:crypto');
const { io } = require('socket.io-client');

const WAIT_MS = 5000;
const sockets = new Set();

/** A content string (or offset) that no other test uses. */
function uid(label) {
  return `${label} ${crypto.randomUUID()}`;
}

/**
 * A socket.io-client socket to `url`; websocket only unless opts.transports says otherwise
 * (transports: null for the library default).
 * forceNew: every call gets its own connection (io() would otherwise share one per URL).
 * Each socket gets `.received`, the list of { content, id } of its 'chat message' events
 * (anything unexpected after them lands in `rest`, failing strict comparisons), `.metas`,
 * the { id, author, time } of each, and `.offsets`, the recovery offsets ("id") that ended them.
 * trackOffset: like the chat page, keep socket.auth.serverOffset at the highest id seen.
 */
function client(url, { trackOffset = false, transports = ['websocket'], auth, ...opts } = {}) {
  const socket = io(url, {
    forceNew: true,
    ...(transports ? { transports } : {}), // null: the library default (polling, then upgrade)
    ...(auth ? { auth: { ...auth } } : {}), // a copy: trackOffset mutates it
    ...opts,
  });
  sockets.add(socket);
  const received = [];
  const waiters = new Set();
  socket.received = received;
  socket.metas = [];
  socket.offsets = [];
  socket.on('chat message', (content, id, meta, ...rest) => {
    // With connection state recovery the last argument is the id again, as a string (the
    // client's offset); kept apart too.
    if (rest.length && rest[rest.length - 1] === String(id)) socket.offsets.push(rest.pop());
    // The third argument is tidings' extension { author, time } (tutorial pages ignore it);
    // it is checked here and kept apart, so tests compare { content, id } as the tutorial does.
    if (
      meta === null || typeof meta !== 'object' ||
      !(meta.author === null || typeof meta.author === 'string') ||
      !Number.isSafeInteger(meta.time)
    ) {
      rest.unshift(meta);
    } else {
      socket.metas.push({ id, ...meta });
    }
    received.push(rest.length ? { content, id, rest } : { content, id });
    if (trackOffset && Number.isSafeInteger(id) && id > (Number(socket.auth.serverOffset) || 0)) {
      socket.auth.serverOffset = id;
    }
    for (const w of waiters) w();
  });
  /** Resolves with `received` once pred(received) is true; rejects after timeoutMs. */
  socket.waitFor = (pred, what = 'condition', timeoutMs = WAIT_MS) =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (!pred(received)) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(received);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; ` +
              `received so far: ${JSON.stringify(received)}`,
          ),
        );
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  /** Waits until at least n messages were received; resolves with the first n. */
  socket.waitForCount = (n, timeoutMs = WAIT_MS) =>
    socket.waitFor((r) => r.length >= n, `${n} message(s)`, timeoutMs).then((r) => r.slice(0, n));
  /** Waits for the message with this content; resolves with it. */
  socket.waitForContent = (content, timeoutMs = WAIT_MS) =>
    socket
      .waitFor((r) => r.some((m) => m.content === content), `message ${JSON.stringify(content)}`, timeoutMs)
      .then((r) => r.find((m) => m.content === content));
  return socket;
}

/** Resolves with the first emission of `event` (its arguments array); rejects after timeoutMs. */
function once(emitter, event, timeoutMs = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    const handler = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    emitter.once(event, handler);
  });
}

/**
 * Resolves when the socket is connected; rejects on connect_error or timeout.
 * retrying: ignore connect_error (a reconnecting client may fail attempts before it succeeds).
 */
function connected(socket, timeoutMs = WAIT_MS, { retrying = false } = {}) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const done = (err) => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
      if (err) reject(err);
      else resolve(socket);
    };
    const onConnect = () => done();
    let lastError = '';
    const onError = (err) => {
      if (!retrying) done(new Error(`connect_error: ${err && err.message}`));
      else lastError = `; last connect_error: ${err && err.message}`;
    };
    const timer = setTimeout(() => done(new Error(`not connected after ${timeoutMs} ms${lastError}`)), timeoutMs);
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

/** Resolves with the Error of the socket's first connect_error; rejects if it connects instead. */
function connectError(socket, timeoutMs = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const done = (err, value) => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
      if (err) reject(err);
      else resolve(value);
    };
    const onConnect = () => done(new Error('connected, but a connect_error was expected'));
    const onError = (e) => done(null, e);
    const timer = setTimeout(() => done(new Error(`no connect_error after ${timeoutMs} ms`)), timeoutMs);
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

/** emitWithAck bounded by a timeout (socket.timeout() rejects when no ack arrives in time). */
function ack(socket, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck('chat message', ...args);
}

/**
 * How long a wait may last before the test calls it a hang. Not a performance window: waits
 * end on events (an ack, a message, a disconnect); this only turns a lost event into a
 * failure that says what is missing, on a machine however busy.
 */
const HANG_MS = 60000;

/**
 * Emits 'chat message' with an ack; resolves with the ack, or rejects as soon as the socket
 * disconnects before it (the server drops a client whose ack it cannot queue). No timer.
 */
function ackOrDisconnect(socket, ...args) {
  return new Promise((resolve, reject) => {
    const onDisconnect = (reason) => reject(new Error(`disconnected (${reason}) before the ack`));
    socket.once('disconnect', onDisconnect);
    socket.emit('chat message', ...args, (res) => {
      socket.off('disconnect', onDisconnect);
      resolve(res);
    });
  });
}

/**
 * Promise.allSettled(promises), or, if some are still pending after hangMs, a rejection
 * naming them with describe(i) (what the test knows about each).
 */
function allSettledOrHang(promises, describe, hangMs = HANG_MS) {
  const settled = promises.map(() => false);
  const tracked = promises.map((p, i) =>
    Promise.resolve(p).then(
      (value) => ((settled[i] = true), { status: 'fulfilled', value }),
      (reason) => ((settled[i] = true), { status: 'rejected', reason }),
    ),
  );
  let timer;
  const hang = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const pending = settled.map((done, i) => (done ? null : describe(i))).filter((d) => d !== null);
      reject(new Error(`still waiting after ${hangMs} ms for ${pending.length}: ${pending.join('; ')}`));
    }, hangMs);
  });
  return Promise.race([Promise.all(tracked), hang]).finally(() => clearTimeout(timer));
}

/** Close every socket made by client(); for afterEach hooks. */
function closeAll() {
  for (const s of sockets) s.disconnect();
  sockets.clear();
}

/**
 * Registers hooks (call it inside a describe) that start a fresh server before each test and,
 * after it, close every socket and stop the server; returns a getter for the current server.
 */
function serverPerTest() {
  const { beforeEach, afterEach, after } = require('node:test');
  const { start, stopAll, cleanup } = require('./server');
  let srv;
  beforeEach(async () => {
    srv = await start();
  });
  afterEach(async () => {
    closeAll();
    await stopAll();
  });
  after(cleanup);
  return () => srv;
}

module.exports = {
  WAIT_MS,
  HANG_MS,
  uid,
  client,
  once,
  connected,
  connectError,
  ack,
  ackOrDisconnect,
  allSettledOrHang,
  closeAll,
  serverPerTest,
};
