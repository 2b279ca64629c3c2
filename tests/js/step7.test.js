'use strict';
// e) The tutorial's step-7 client: emit('chat message', msg) with no clientOffset and no ack.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { uid, client, connected, serverPerTest } = require('./helpers');

describe('step-7 client (tutorial "server delivery")', () => {
  const srv = serverPerTest();

  it('a message with no offset and no ack is broadcast with an id', { timeout: 20000 }, async () => {
    const sender = client(srv().url, { auth: { serverOffset: 0 }, trackOffset: true });
    const observer = client(srv().url, { auth: { serverOffset: 0 }, trackOffset: true });
    await Promise.all([connected(sender), connected(observer)]);
    const hi = uid('hi');
    sender.emit('chat message', hi);
    const got = await observer.waitForCount(1);
    assert.deepEqual(got, [{ content: hi, id: 1 }]);
    assert.deepEqual(await sender.waitForCount(1), got, 'the sender receives it too');

    // two identical step-7 messages are two messages (there is no offset to dedup on)
    const again = uid('hi again');
    sender.emit('chat message', again);
    sender.emit('chat message', again);
    assert.deepEqual(await observer.waitForCount(3), [
      { content: hi, id: 1 },
      { content: again, id: 2 },
      { content: again, id: 3 },
    ]);
    assert.equal(observer.auth.serverOffset, 3);
  });
});
