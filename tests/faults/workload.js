// The clients of a fault run, with the official socket.io-client, in the root namespace:
// - senders: each sends unique messages to its room with a `clientOffset`, one at a time,
//   waiting for the ack; on a timeout (or a refused connection) it moves to the next node and
//   sends the same message with the same offset again, until it is acked or the run ends;
// - readers: each is in every room from id 0, records every message it is given, and
//   reconnects with the last id it saw (to the next node) when its connection drops, when
//   nothing arrives for a while, and now and then for no reason at all.
// Everything they see is recorded for the checker (checker.js).

'use strict';

const { io } = require('socket.io-client');

const ROOMS = ['general', 'r2', 'r3'];
/** How long a sender waits for an ack before it tries the next node. */
const ACK_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 3000;
/** Between one sender's messages (each sender has at most one message in flight). */
const PACE_MS = 60;
/** A reader that receives nothing for this long while senders are acked reconnects. */
const READER_STALL_MS = 8000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Connects to `url` (websocket only, no automatic reconnection): the socket, or null.
 * `onMessage(content, id, meta)` is registered before the connection opens: the replay may
 * arrive in the same read as the connect packet, before a listener added after it.
 */
function connect(url, auth, onMessage = null) {
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      timeout: CONNECT_TIMEOUT_MS,
      auth,
    });
    if (onMessage) socket.on('chat message', onMessage);
    const timer = setTimeout(() => done(null), CONNECT_TIMEOUT_MS + 500);
    const done = (value) => {
      clearTimeout(timer);
      socket.off('connect');
      socket.off('connect_error');
      if (!value) socket.close();
      resolve(value);
    };
    socket.once('connect', () => done(socket));
    socket.once('connect_error', () => done(null));
  });
}

class Workload {
  /** `urls`: the nodes' URLs; `senders`, `readers`: how many of each. */
  constructor(urls, { senders = 6, readers = 3 } = {}) {
    this.urls = urls;
    this.senderCount = senders;
    this.readerCount = readers;
    this.stopped = false;
    this.started = Date.now();
    /** Every ack: { sender, content, room, offset, id, duplicate, node, at, attempts, sentAt }. */
    this.acks = [];
    /** Errors some ack carried: { sender, content, error, node, at }. */
    this.ackErrors = [];
    /** Messages sent and never acked (in flight when the run ended): { content, room, offset }. */
    this.unacked = [];
    /** Per reader: { name, seen: [{ id, content, room, at, node }], reconnects }. */
    this.readers = [];
    this.attempts = 0;
    this.timeouts = 0;
    this.lastAckAt = 0;
    this.tasks = [];
  }

  start() {
    for (let k = 0; k < this.senderCount; k++) this.tasks.push(this.sender(k));
    for (let r = 0; r < this.readerCount; r++) {
      const record = { name: `reader${r}`, seen: [], reconnects: 0 };
      this.readers.push(record);
      this.tasks.push(this.reader(r, record));
    }
  }

  /** Stops sending, closes every socket, and waits for the clients' tasks. */
  async stop() {
    this.stopped = true;
    await Promise.all(this.tasks);
  }

  async sender(k) {
    const room = ROOMS[k % ROOMS.length];
    let node = k % this.urls.length;
    let socket = null;
    let i = 0;
    while (!this.stopped) {
      const content = `s${k}-${i}`;
      const message = { content, room, offset: content };
      const sentAt = Date.now();
      let attempts = 0;
      let acked = false;
      while (!this.stopped && !acked) {
        if (!socket) {
          socket = await connect(this.urls[node], { rooms: [room], latest: 1 });
          if (!socket) {
            node = (node + 1) % this.urls.length;
            await sleep(200);
            continue;
          }
        }
        attempts += 1;
        this.attempts += 1;
        let reply;
        try {
          reply = await socket
            .timeout(ACK_TIMEOUT_MS)
            .emitWithAck('chat message', content, content, { room });
        } catch {
          // No ack in time: the same message, same offset, through the next node.
          this.timeouts += 1;
          socket.close();
          socket = null;
          node = (node + 1) % this.urls.length;
          continue;
        }
        const at = Date.now();
        if (reply && Number.isSafeInteger(reply.id)) {
          this.acks.push({
            sender: k,
            ...message,
            id: reply.id,
            duplicate: reply.duplicate === true,
            node,
            at,
            sentAt,
            attempts,
          });
          this.lastAckAt = at;
          acked = true;
        } else {
          this.ackErrors.push({ sender: k, content, error: reply, node, at });
          await sleep(500);
        }
      }
      if (!acked) this.unacked.push(message);
      i += 1;
      await sleep(PACE_MS);
    }
    if (socket) socket.close();
  }

  async reader(r, record) {
    let node = r % this.urls.length;
    let last = 0;
    while (!this.stopped) {
      let lastArrival = Date.now();
      const here = node;
      const socket = await connect(this.urls[node], { serverOffset: last, rooms: ROOMS }, (content, id, meta) => {
        lastArrival = Date.now();
        record.seen.push({ id, content, room: meta && meta.room, at: lastArrival, node: here });
        if (Number.isSafeInteger(id) && id > last) last = id;
      });
      if (!socket) {
        node = (node + 1) % this.urls.length;
        await sleep(200);
        continue;
      }
      lastArrival = Date.now();
      const closed = new Promise((resolve) => socket.once('disconnect', resolve));
      // Now and then, a reconnect for no reason (a page reload, a phone waking up).
      const leaveAt = Date.now() + 10000 + Math.random() * 15000;
      for (;;) {
        const tick = await Promise.race([closed.then(() => 'closed'), sleep(250).then(() => 'tick')]);
        if (tick === 'closed' || this.stopped) break;
        const stalled = Date.now() - lastArrival > READER_STALL_MS && this.lastAckAt > lastArrival;
        if (stalled || Date.now() > leaveAt) break;
      }
      socket.removeAllListeners('chat message');
      socket.close();
      record.reconnects += 1;
      node = (node + 1) % this.urls.length;
    }
  }

  /**
   * Whether node `n` serves reads now: a fresh client asking for the newest 5 messages of
   * every room gets at least one within `timeoutMs` (a node cut off from NATS still serves
   * its replica).
   */
  async servesReads(n, timeoutMs = 5000) {
    let got = 0;
    const socket = await connect(this.urls[n], { serverOffset: 0, rooms: ROOMS, latest: 5 }, () => {
      got += 1;
    });
    if (!socket) return false;
    const deadline = Date.now() + timeoutMs;
    while (got === 0 && Date.now() < deadline) await sleep(50);
    socket.close();
    return got > 0;
  }

  /**
   * Readers again, after the run: one per node, from id 0 until they reach `lastId` (the
   * stream's end) or `timeoutMs` passes. What every node serves is checked against what it
   * stores.
   */
  async finalReads(lastId, timeoutMs) {
    const out = {};
    await Promise.all(
      this.urls.map(async (url, n) => {
        const seen = [];
        const socket = await connect(url, { serverOffset: 0, rooms: ROOMS }, (content, id, meta) => {
          seen.push({ id, content, room: meta && meta.room });
        });
        if (!socket) {
          out[n] = { seen, error: 'could not connect' };
          return;
        }
        const deadline = Date.now() + timeoutMs;
        const done = () => seen.length > 0 && seen[seen.length - 1].id >= lastId;
        while (!done() && Date.now() < deadline) await sleep(100);
        await sleep(300);
        socket.close();
        out[n] = { seen };
      }),
    );
    return out;
  }
}

module.exports = { ROOMS, Workload, ACK_TIMEOUT_MS };
