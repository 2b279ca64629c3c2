'use strict';
// Messages emitted as soon as a socket connects are not lost. socket.io-client buffers emits
// made before the connection is up and flushes them right after the CONNECT packet, and the
// step-8 page's retry queue does the same on every reconnection: the server must already
// listen for 'chat message' when it sends CONNECT.
const { describe, it, beforeEach, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { HANG_MS, uid, client, connected, ackOrDisconnect, allSettledOrHang, closeAll } = require('./helpers');

const CLIENTS = 20;

describe('messages emitted right at connection', () => {
  let srv;
  let observer;
  beforeEach(async () => {
    srv = await start();
    observer = client(srv.url, { auth: { serverOffset: 0 } });
    await connected(observer, HANG_MS);
  });
  afterEach(async () => {
    closeAll();
    await stopAll();
  });
  after(cleanup);

  // No per-ack time limit: each ack is awaited until it comes or its socket disconnects (a
  // message the server never took has no ack; a lost ack is a disconnect). HANG_MS only turns
  // a hang into a failure naming what is missing.
  it('with an ack: every buffered message is acked and delivered once', { timeout: HANG_MS + 30000 }, async () => {
    const contents = Array.from({ length: CLIENTS }, (_, i) => uid(`early ack ${i}`));
    const senders = contents.map(() => client(srv.url, { auth: { serverOffset: 0 } }));
    // emitted before 'connect': buffered by the client, sent right after CONNECT
    const acks = await allSettledOrHang(
      contents.map((content, i) => ackOrDisconnect(senders[i], content, uid('offset'))),
      (i) => `the ack of ${contents[i]} (connected: ${senders[i].connected})`,
    );
    const lost = acks.map((r, i) => (r.status === 'rejected' ? `${contents[i]}: ${r.reason.message}` : null)).filter(Boolean);
    assert.deepEqual(lost, [], `${lost.length} of ${CLIENTS} messages emitted at connection got no ack`);
    const got = await observer.waitFor((r) => r.length >= CLIENTS, `${CLIENTS} messages`, HANG_MS);
    assert.deepEqual(got.map((m) => m.content).sort(), [...contents].sort());
    assert.deepEqual(got.map((m) => m.id).sort((a, b) => a - b), acks.map((r) => r.value.id).sort((a, b) => a - b));
  });

  it('step-7 style (no ack): every buffered message is delivered', { timeout: HANG_MS + 30000 }, async () => {
    const contents = Array.from({ length: CLIENTS }, (_, i) => uid(`early no-ack ${i}`));
    for (const content of contents) client(srv.url, { auth: { serverOffset: 0 } }).emit('chat message', content);
    const got = await observer
      .waitFor((r) => r.length >= CLIENTS, `${CLIENTS} messages`, HANG_MS)
      .catch((e) => {
        const seen = new Set(observer.received.map((m) => m.content));
        const missing = contents.filter((c) => !seen.has(c));
        throw new Error(`${missing.length} of ${CLIENTS} messages emitted at connection were never delivered\n${e.message}`);
      });
    assert.deepEqual(got.map((m) => m.content).sort(), [...contents].sort());
  });

  // The server lists a socket in presence before it sends CONNECT: `typing` flushed right
  // after CONNECT comes from a named, listed socket and reaches the others. (It was once
  // listed by the connect handler, which socketioxide runs after CONNECT, and such typing
  // was dropped.)
  it('typing: every buffered notice reaches the others', { timeout: HANG_MS + 30000 }, async () => {
    const names = Array.from({ length: CLIENTS }, (_, i) => `early-${i}`);
    const seen = new Set();
    let done;
    const all = new Promise((resolve) => { done = resolve; });
    observer.on('typing', (notice) => {
      if (notice && notice.typing === true) seen.add(notice.nickname);
      if (names.every((n) => seen.has(n))) done();
    });
    for (const nickname of names) {
      client(srv.url, { auth: { serverOffset: 0, nickname } }).emit('typing', true);
    }
    let timer;
    const hang = new Promise((resolve) => { timer = setTimeout(resolve, HANG_MS); });
    await Promise.race([all, hang]);
    clearTimeout(timer);
    const missing = names.filter((n) => !seen.has(n));
    assert.deepEqual(missing, [], `${missing.length} of ${CLIENTS} typing notices emitted at connection were lost`);
  });
});
