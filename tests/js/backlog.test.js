'use strict';
// A long history: clients that connect with serverOffset 0 get all of it, in order, on one
// connection, and the acks of messages they send meanwhile are not lost behind the replay.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { HANG_MS, uid, client, connected, ackOrDisconnect, allSettledOrHang, closeAll } = require('./helpers');

const HISTORY = 1000; // well above socket.io's default per-socket buffer (128 packets)
const READERS = 10;
const ROUNDS = 5;

describe('replaying a long history', () => {
  let srv;
  const stored = []; // contents in id order: stored[i] has id i + 1

  before(async () => {
    // The backlog is written by one connection far above the default per-connection rate limit.
    srv = await start({ extraArgs: ['--rate-limit', '0'] });
    const writer = client(srv.url, { auth: { serverOffset: HISTORY }, ackTimeout: 10000, retries: 3 });
    await connected(writer, HANG_MS);
    for (let i = 1; i <= HISTORY; i++) stored.push(uid(`backlog msg${i}`));
    // the retries queue sends them one at a time; the last ack means all are stored
    for (const content of stored.slice(0, -1)) writer.emit('chat message', content, uid('offset'));
    assert.deepEqual(await writer.emitWithAck('chat message', stored.at(-1), uid('offset')), { id: HISTORY });
    writer.disconnect();
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await stopAll();
    cleanup();
  });

  // No per-ack or per-replay time limit: an ack is awaited until it comes or its reader
  // disconnects (a lost ack is a disconnect: the server drops a client it cannot ack), a
  // replay until it is complete; HANG_MS only turns a hang into a failure saying what is missing.
  it(`${ROUNDS} rounds of ${READERS} clients: each replays the whole history in order, each ack arrives`, { timeout: ROUNDS * HANG_MS }, async () => {
    for (let round = 1; round <= ROUNDS; round++) {
      const before = stored.length;
      const readers = Array.from({ length: READERS }, () => {
        const reader = client(srv.url, { auth: { serverOffset: 0 }, reconnection: false });
        reader.disconnects = [];
        reader.on('disconnect', (reason, details) =>
          reader.disconnects.push(`${reason} ${details?.description?.message ?? ''}`.trim()),
        );
        return reader;
      });
      await Promise.all(readers.map((r) => connected(r, HANG_MS)));
      const own = readers.map((_, i) => uid(`backlog round${round} reader${i}`));
      const acks = await allSettledOrHang(
        readers.map((r, i) => ackOrDisconnect(r, own[i], uid('offset'))),
        (i) => `reader ${i}'s ack (received ${readers[i].received.length} of ${before + READERS})`,
      );
      const problems = acks
        .map((a, i) =>
          a.status === 'rejected'
            ? `reader ${i}: no ack (${a.reason.message}); disconnects ${JSON.stringify(readers[i].disconnects)}; ` +
              `received ${readers[i].received.length} of ${before + READERS}`
            : null,
        )
        .filter(Boolean);
      assert.deepEqual(problems, [], `round ${round}: every ack arrives`);

      const total = before + READERS;
      const ackIds = acks.map((a) => a.value.id).sort((x, y) => x - y);
      assert.deepEqual(ackIds, Array.from({ length: READERS }, (_, i) => before + i + 1), `round ${round}: ack ids`);
      for (const [i, reader] of readers.entries()) {
        const got = await reader.waitForCount(total, HANG_MS);
        assert.deepEqual(reader.disconnects, [], `round ${round} reader ${i}: no disconnect`);
        assert.deepEqual(got.map((m) => m.id), Array.from({ length: total }, (_, k) => k + 1), `round ${round} reader ${i}: ids`);
        assert.deepEqual(got.slice(0, before).map((m) => m.content), stored.slice(0, before), `round ${round} reader ${i}: history`);
        if (i === 0) stored.push(...got.slice(before).map((m) => m.content));
        else assert.deepEqual(got.slice(before).map((m) => m.content), stored.slice(before), `round ${round} reader ${i}: new`);
      }
      assert.deepEqual([...stored.slice(before)].sort(), [...own].sort());
      closeAll();
    }
  });
});
