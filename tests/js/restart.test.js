'use strict';
// g) The server dies mid-session and comes back on the same db file and port: messages sent
// meanwhile are delivered exactly once after the restart, and the history persists.
const { describe, it, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, once, ack, closeAll } = require('./helpers');

// the chat page's client, reconnecting faster than the default 1-5 s so the test stays short
const PAGE = {
  auth: { serverOffset: 0 },
  ackTimeout: 10000,
  retries: 3,
  trackOffset: true,
  reconnectionDelay: 100,
  reconnectionDelayMax: 500,
};

/** Every content exactly once, ids exactly 1..n in increasing order. */
function assertExactlyOnce(received, contents, who) {
  const n = contents.length;
  assert.deepEqual(
    received.map((m) => m.id),
    Array.from({ length: n }, (_, i) => i + 1),
    `${who}: ids (no duplicates, no gaps, in order); received ${JSON.stringify(received)}`,
  );
  assert.deepEqual(
    [...received.map((m) => m.content)].sort(),
    [...contents].sort(),
    `${who}: every content exactly once`,
  );
}

describe('restart on the same db file', () => {
  afterEach(async () => {
    closeAll();
    await stopAll();
  });
  after(cleanup);

  for (const signal of ['SIGKILL', 'SIGTERM']) {
    it(`${signal} mid-session: offline messages delivered exactly once, history kept`, { timeout: 45000 }, async () => {
      let srv = await start();
      const { db, port } = srv;
      const sender = client(srv.url, PAGE);
      const observer = client(srv.url, PAGE);
      await Promise.all([connected(sender), connected(observer)]);
      const sent = [];
      const send = (label) => {
        const content = uid(`restart ${signal} ${label}`);
        sent.push(content);
        sender.emit('chat message', content, uid('offset'));
      };

      for (let i = 0; i < 3; i++) send(`before ${i}`);
      await observer.waitForCount(3);
      await sender.waitForCount(3);

      // some may still be in flight when the server dies: the client resends them
      for (let i = 0; i < 3; i++) send(`racing ${i}`);
      const down = [once(sender, 'disconnect', 10000), once(observer, 'disconnect', 10000)];
      const exit = await srv.stop({ signal });
      if (signal === 'SIGTERM') {
        // a graceful stop within the stop timeout: it handles the signal and exits 0 by itself
        // (death by the signal would mean it never shut down, stored and acked nothing more)
        assert.deepEqual(exit, { code: 0, signal: null }, `exit on SIGTERM: ${JSON.stringify(exit)}`);
      } else {
        assert.deepEqual(exit, { code: null, signal: 'SIGKILL' }, `exit on SIGKILL: ${JSON.stringify(exit)}`);
      }
      await Promise.all(down);

      for (let i = 0; i < 3; i++) send(`offline ${i}`);
      srv = await start({ db, port });
      assert.equal(srv.port, port);
      await Promise.all([
        connected(sender, 15000, { retrying: true }),
        connected(observer, 15000, { retrying: true }),
      ]);

      // the retries queue is in order: once this is acked, everything before it is too
      const last = uid(`restart ${signal} after`);
      sent.push(last);
      const { id } = await sender.emitWithAck('chat message', last, uid('offset'));
      assert.equal(id, sent.length, `ack of the last message: ${id}`);
      await sender.waitForContent(last, 10000);
      await observer.waitForContent(last, 10000);
      // the last message is the last thing broadcast: anything duplicated came before it
      assertExactlyOnce(sender.received, sent, 'sender');
      assertExactlyOnce(observer.received, sent, 'observer');
      assert.equal(sender.auth.serverOffset, sent.length);

      // the history survived: a new client replays it all, with the same ids
      const history = observer.received.slice();
      const fresh = client(srv.url, { auth: { serverOffset: 0 } });
      await connected(fresh);
      await fresh.waitForCount(sent.length);
      const probe = uid(`restart ${signal} probe`);
      assert.deepEqual(await ack(fresh, probe, uid('offset')), { id: sent.length + 1 });
      assert.deepEqual(await fresh.waitForCount(sent.length + 1), [
        ...history,
        { content: probe, id: sent.length + 1 },
      ]);
    });
  }
});
