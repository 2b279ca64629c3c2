'use strict';
// d) The handshake's auth.serverOffset is validated: bad values are refused with connect_error.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, connectError, ack, closeAll } = require('./helpers');

describe('auth.serverOffset validation', () => {
  let srv;
  before(async () => {
    srv = await start();
  });
  afterEach(() => closeAll());
  after(async () => {
    closeAll();
    await stopAll();
    cleanup();
  });

  const bad = [
    ['-1', -1],
    ['1.5', 1.5],
    ['"abc"', 'abc'],
    ['{} (an object)', {}],
    ['2**53+2 (beyond Number.MAX_SAFE_INTEGER)', 2 ** 53 + 2],
  ];
  for (const [label, serverOffset] of bad) {
    it(`serverOffset ${label} is refused with a connect_error naming serverOffset`, { timeout: 10000 }, async () => {
      const socket = client(srv.url, { auth: { serverOffset }, reconnection: false });
      const err = await connectError(socket);
      assert.ok(err instanceof Error, 'connect_error carries an Error');
      assert.equal(typeof err.message, 'string');
      assert.ok(err.message.length > 0, 'the message is not empty');
      assert.match(err.message, /serverOffset/, `message: ${JSON.stringify(err.message)}`);
      assert.equal(socket.connected, false);
    });
  }

  it('the server still works after refusing handshakes', { timeout: 10000 }, async () => {
    const refused = client(srv.url, { auth: { serverOffset: -1 }, reconnection: false });
    await connectError(refused);
    const socket = client(srv.url, { auth: { serverOffset: 0 } });
    await connected(socket);
    const content = uid('auth after refusal');
    const { id } = await ack(socket, content, uid('offset'));
    assert.ok(Number.isSafeInteger(id) && id >= 1, `ack id ${id}`);
    assert.deepEqual(await socket.waitForContent(content), { content, id });
  });

  const good = [
    ['0', 0],
    ['"0"', '0'],
    ['"3" (a string)', '3'],
    ['2**53-1 (Number.MAX_SAFE_INTEGER)', Number.MAX_SAFE_INTEGER],
  ];
  for (const [label, serverOffset] of good) {
    it(`serverOffset ${label} is accepted`, { timeout: 10000 }, async () => {
      await connected(client(srv.url, { auth: { serverOffset }, reconnection: false }));
    });
  }

  it('no auth at all (the tutorial before step 7) is accepted', { timeout: 10000 }, async () => {
    await connected(client(srv.url, { reconnection: false }));
  });
});
