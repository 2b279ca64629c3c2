'use strict';
// h) The same basic flow over HTTP long-polling, and with the default transports
// (long-polling first, then the upgrade to WebSocket).
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { uid, client, connected, once, ack, serverPerTest } = require('./helpers');

const STEP8 = { auth: { serverOffset: 0 }, ackTimeout: 10000, retries: 3, trackOffset: true };

const variants = [
  ['polling only', { transports: ['polling'] }, 'polling'],
  ['default transports (polling, then upgrade)', { transports: null }, 'websocket'],
];

describe('transports', () => {
  const srv = serverPerTest();

  for (const [label, transportOpts, finalTransport] of variants) {
    it(`${label}: broadcast, acks, ids, replay`, { timeout: 30000 }, async () => {
      const opts = { ...STEP8, ...transportOpts };
      const a = client(srv().url, opts);
      const b = client(srv().url, opts);
      const upgraded =
        finalTransport === 'websocket'
          ? Promise.all([once(a.io.engine, 'upgrade'), once(b.io.engine, 'upgrade')])
          : null;
      await Promise.all([connected(a), connected(b)]);

      const c = Array.from({ length: 5 }, (_, i) => uid(`${label} msg${i}`));
      const expected = c.map((content, i) => ({ content, id: i + 1 }));
      a.emit('chat message', c[0], uid('offset'));
      assert.deepEqual(await b.waitForCount(1), expected.slice(0, 1));
      assert.deepEqual(await a.emitWithAck('chat message', c[1], uid('offset')), { id: 2 });
      assert.deepEqual(await b.emitWithAck('chat message', c[2], uid('offset')), { id: 3 });
      for (const content of c.slice(3)) a.emit('chat message', content, uid('offset'));
      assert.deepEqual(await b.waitForCount(5), expected, 'observer');
      assert.deepEqual(await a.waitForCount(5), expected, 'sender');

      if (upgraded) await upgraded;
      assert.equal(a.io.engine.transport.name, finalTransport);
      assert.equal(b.io.engine.transport.name, finalTransport);

      // replay over the same transport settings
      const late = client(srv().url, { ...opts, auth: { serverOffset: 2 } });
      await connected(late);
      await late.waitForCount(3);
      const live = uid(`${label} live`);
      assert.deepEqual(await ack(a, live, uid('offset')), { id: 6 });
      assert.deepEqual(await late.waitForCount(4), [...expected.slice(2), { content: live, id: 6 }]);
    });
  }

  it('polling: a large burst arrives complete and in order', { timeout: 30000 }, async () => {
    const opts = { ...STEP8, transports: ['polling'] };
    const a = client(srv().url, opts);
    const b = client(srv().url, opts);
    await Promise.all([connected(a), connected(b)]);
    const c = Array.from({ length: 50 }, (_, i) => uid(`polling burst msg${i}`) + ' é中😀'.repeat(i % 3));
    for (const content of c) a.emit('chat message', content, uid('offset'));
    const got = await b.waitForCount(50, 20000);
    assert.deepEqual(got, c.map((content, i) => ({ content, id: i + 1 })));
  });
});
