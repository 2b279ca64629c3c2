'use strict';
// --admin-listen: /metrics moves to the admin port (its own ready line), the public port keeps
// /healthz for load balancers and no longer serves /metrics; the admin port serves nothing of
// the chat.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { client, connected, closeAll, uid, ack } = require('./helpers');

after(async () => {
  closeAll();
  await stopAll();
  cleanup();
});

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe('--admin-listen', () => {
  it('serves /metrics on the admin port only, /healthz on both', async () => {
    const srv = await start({ extraArgs: ['--admin-listen', '127.0.0.1:0'] });
    const admin = await within(srv.admin, 5000, '"admin on http://…" line');
    assert.match(admin, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(admin, srv.url);
    const socket = client(srv.url);
    await connected(socket);
    await ack(socket, uid('counted'));
    const metrics = await fetch(`${admin}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /tidings_messages_stored_total 1\b/);
    assert.equal((await fetch(`${srv.url}/metrics`)).status, 404, 'not on the public port');
    assert.equal((await fetch(`${srv.url}/healthz`)).status, 200, 'the public port keeps /healthz');
    assert.equal((await fetch(`${admin}/healthz`)).status, 200);
    assert.equal((await fetch(`${admin}/`)).status, 404, 'nothing of the chat on the admin port');
    assert.equal((await fetch(`${admin}/socket.io/?EIO=4&transport=polling`)).status, 404);
    const exit = await srv.stop();
    assert.equal(exit.code, 0, 'a clean stop with the admin port open');
  });

  it('without it, /metrics stays on the public port', async () => {
    const srv = await start();
    assert.equal((await fetch(`${srv.url}/metrics`)).status, 200);
  });

  it('an address it cannot listen on stops the start, naming the flag', async () => {
    await assert.rejects(start({ extraArgs: ['--admin-listen', 'not an address'] }), /--admin-listen: cannot listen on not an address/);
  });
});
