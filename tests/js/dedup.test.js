'use strict';
// b) Dedup on (content, clientOffset): a retried message is stored and broadcast once.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { uid, client, connected, ack, serverPerTest } = require('./helpers');

describe('dedup by clientOffset', () => {
  const srv = serverPerTest();

  it('the same (content, clientOffset) twice: second ack is { id, duplicate: true }, one broadcast', { timeout: 20000 }, async () => {
    const sender = client(srv().url, { auth: { serverOffset: 0 } });
    const observer = client(srv().url, { auth: { serverOffset: 0 } });
    await Promise.all([connected(sender), connected(observer)]);
    const content = uid('dedup same');
    const offset = uid('offset');

    assert.deepEqual(await ack(sender, content, offset), { id: 1 });
    assert.deepEqual(await ack(sender, content, offset), { id: 1, duplicate: true });

    // nothing was broadcast for the duplicate: the next message anyone sees is the follow-up
    const follow = uid('dedup follow-up');
    assert.deepEqual(await ack(sender, follow, uid('offset')), { id: 2 });
    const expected = [
      { content, id: 1 },
      { content: follow, id: 2 },
    ];
    assert.deepEqual(await observer.waitForCount(2), expected, 'observer');
    assert.deepEqual(await sender.waitForCount(2), expected, 'sender');
  });

  it('the same clientOffset with different content is a new message', { timeout: 20000 }, async () => {
    const sender = client(srv().url, { auth: { serverOffset: 0 } });
    const observer = client(srv().url, { auth: { serverOffset: 0 } });
    await Promise.all([connected(sender), connected(observer)]);
    const offset = uid('offset');
    const first = uid('dedup first');
    const second = uid('dedup second');

    assert.deepEqual(await ack(sender, first, offset), { id: 1 });
    assert.deepEqual(await ack(sender, second, offset), { id: 2 });
    assert.deepEqual(await observer.waitForCount(2), [
      { content: first, id: 1 },
      { content: second, id: 2 },
    ]);
  });

  it('a duplicate sent on another connection (a retry after reconnecting) is still a duplicate', { timeout: 20000 }, async () => {
    const first = client(srv().url, { auth: { serverOffset: 0 } });
    const observer = client(srv().url, { auth: { serverOffset: 0 } });
    await Promise.all([connected(first), connected(observer)]);
    const content = uid('dedup cross-connection');
    const offset = uid('offset');
    assert.deepEqual(await ack(first, content, offset), { id: 1 });
    first.disconnect();

    const second = client(srv().url, { auth: { serverOffset: 1 } });
    await connected(second);
    assert.deepEqual(await ack(second, content, offset), { id: 1, duplicate: true });

    const follow = uid('dedup follow-up');
    assert.deepEqual(await ack(second, follow, uid('offset')), { id: 2 });
    assert.deepEqual(await observer.waitForCount(2), [
      { content, id: 1 },
      { content: follow, id: 2 },
    ]);
  });

  it('a step-8 client emitting the same message twice is delivered once', { timeout: 20000 }, async () => {
    const opts = { auth: { serverOffset: 0 }, ackTimeout: 10000, retries: 3 };
    const sender = client(srv().url, opts);
    const observer = client(srv().url, opts);
    await Promise.all([connected(sender), connected(observer)]);
    const content = uid('dedup step8');
    const offset = uid('offset');
    sender.emit('chat message', content, offset);
    sender.emit('chat message', content, offset);
    const follow = uid('dedup step8 follow-up');
    sender.emit('chat message', follow, uid('offset'));
    assert.deepEqual(await observer.waitForCount(2), [
      { content, id: 1 },
      { content: follow, id: 2 },
    ]);
  });
});
