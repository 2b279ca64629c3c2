'use strict';
// f) Invalid 'chat message' payloads are refused in the ack and never stored or broadcast.
const { describe, it, beforeEach, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, once, ack, closeAll } = require('./helpers');

describe('invalid payloads', () => {
  let srv;
  let sender;
  let observer;
  beforeEach(async () => {
    srv = await start();
    sender = client(srv.url, { auth: { serverOffset: 0 } });
    observer = client(srv.url, { auth: { serverOffset: 0 } });
    await Promise.all([connected(sender), connected(observer)]);
  });
  afterEach(async () => {
    closeAll();
    await stopAll();
  });
  after(cleanup);

  /** A valid message on the same connection gets id 1 and is the first thing anyone sees. */
  async function followUpIsFirst() {
    const content = uid('invalid follow-up');
    assert.deepEqual(await ack(sender, content, uid('offset')), { id: 1 });
    assert.deepEqual(await observer.waitForCount(1), [{ content, id: 1 }], 'observer');
    assert.deepEqual(await sender.waitForCount(1), [{ content, id: 1 }], 'sender');
  }

  const cases = [
    ['content 42 (a number)', () => [42, uid('offset')]],
    ["content '' (empty)", () => ['', uid('offset')]],
    ['content null', () => [null, uid('offset')]],
    ['clientOffset 7 (a number)', () => [uid('invalid offset 7'), 7]],
    // beyond the brief's list: the reference server never acks object content
    ['content { text } (an object)', () => [{ text: uid('object') }, uid('offset')]],
    ["content ['x'] (an array)", () => [[uid('array')], uid('offset')]],
  ];
  for (const [label, args] of cases) {
    it(`${label}: ack is { error }, nothing is broadcast, the connection still works`, { timeout: 20000 }, async () => {
      const res = await ack(sender, ...args());
      assert.equal(typeof res, 'object', `ack: ${JSON.stringify(res)}`);
      assert.notEqual(res, null);
      assert.equal(typeof res.error, 'string', `ack: ${JSON.stringify(res)}`);
      assert.ok(res.error.length > 0, 'error message is not empty');
      assert.equal(res.id, undefined, `no id in the ack: ${JSON.stringify(res)}`);
      await followUpIsFirst();
    });
  }

  it('invalid step-7 emits (no ack) are never stored, not even later, and the connection still works', { timeout: 30000 }, async () => {
    sender.emit('chat message', 42);
    sender.emit('chat message', '');
    sender.emit('chat message', null);
    sender.emit('chat message', { text: 'object' });
    sender.emit('chat message');
    await followUpIsFirst();
    assert.equal(sender.connected, true);
    // Nothing comes between the follow-up and a second message either.
    const second = uid('invalid second follow-up');
    assert.deepEqual(await ack(sender, second, uid('offset')), { id: 2 });
    assert.deepEqual((await observer.waitForCount(2))[1], { content: second, id: 2 });
    // A graceful stop finishes whatever the server was still doing with those emits; then
    // the file holds exactly the two messages, whenever anything else might have been stored.
    const { db, port } = srv;
    assert.deepEqual(await srv.stop({ signal: 'SIGTERM' }), { code: 0, signal: null });
    const again = await start({ db, port });
    const fresh = client(again.url, { auth: { serverOffset: 0 } });
    const [sync] = await once(fresh, 'sync');
    assert.deepEqual(fresh.received, observer.received.slice(0, 2), 'the whole history');
    assert.equal(sync.to, 2, `sync ${JSON.stringify(sync)}`);
  });
});
