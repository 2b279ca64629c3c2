'use strict';
// a) The tutorial's step-8 client: auth.serverOffset, ackTimeout + retries, clientOffset.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { uid, client, connected, serverPerTest } = require('./helpers');

const STEP8 = { auth: { serverOffset: 0 }, ackTimeout: 10000, retries: 3, trackOffset: true };

describe('step-8 client (tutorial "client delivery")', () => {
  const srv = serverPerTest();

  it('broadcasts (content, id) to everyone, ids 1, 2, 3... in order, acks with { id }', { timeout: 30000 }, async () => {
    const a = client(srv().url, STEP8);
    const b = client(srv().url, STEP8);
    await Promise.all([connected(a), connected(b)]);
    const c = Array.from({ length: 6 }, (_, i) => uid(`step8 msg${i}`));
    const expected = c.map((content, i) => ({ content, id: i + 1 }));

    // exactly what the page does: emit with a clientOffset, the client adds the ack (retries)
    a.emit('chat message', c[0], uid('offset'));
    assert.deepEqual(await b.waitForCount(1), expected.slice(0, 1));

    const ack1 = await a.emitWithAck('chat message', c[1], uid('offset'));
    assert.deepEqual(ack1, { id: 2 });
    const ack2 = await b.emitWithAck('chat message', c[2], uid('offset'));
    assert.deepEqual(ack2, { id: 3 });

    // a burst: the retries queue sends them one at a time, in order
    for (const content of c.slice(3)) a.emit('chat message', content, uid('offset'));

    assert.deepEqual(await b.waitForCount(6), expected, 'observer b');
    assert.deepEqual(await a.waitForCount(6), expected, 'sender a gets its own messages too');
    assert.equal(a.auth.serverOffset, 6);
    assert.equal(b.auth.serverOffset, 6);
  });

  it('a reloaded page (offset = last id seen) gets no replay, only new messages', { timeout: 20000 }, async () => {
    const a = client(srv().url, STEP8);
    await connected(a);
    const first = uid('step8 before reload');
    assert.deepEqual(await a.emitWithAck('chat message', first, uid('offset')), { id: 1 });
    await a.waitForCount(1);

    const reloaded = client(srv().url, { ...STEP8, auth: { serverOffset: a.auth.serverOffset } });
    await connected(reloaded);
    const next = uid('step8 after reload');
    assert.deepEqual(await a.emitWithAck('chat message', next, uid('offset')), { id: 2 });
    assert.deepEqual(await reloaded.waitForCount(1), [{ content: next, id: 2 }]);
  });
});
