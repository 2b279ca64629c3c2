'use strict';
// --allowed-origins: a page of another site cannot open a socket (403 on the websocket upgrade
// and on long-polling), a listed origin and the server's own can, and clients that send no
// Origin (non-browser ones) always can. With the official client, Origin set as a browser
// would set it.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, connectError, ack, closeAll } = require('./helpers');

afterEach(() => closeAll());
after(async () => {
  closeAll();
  await stopAll();
  cleanup();
});

/** The status of a long-polling handshake sent with `origin` (none when undefined). */
function pollStatus(url, origin) {
  return new Promise((resolve, reject) => {
    const request = http.get(`${url}/socket.io/?EIO=4&transport=polling`, { headers: origin ? { Origin: origin } : {} }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    request.on('error', reject);
    request.setTimeout(5000, () => request.destroy(new Error('no answer')));
  });
}

describe('--allowed-origins', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: ['--allowed-origins', 'https://chat.example.com,http://localhost:8080'] });
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`refuses another site's page and lets a listed one in (${transports[0]})`, async () => {
      const evil = client(srv.url, { transports, extraHeaders: { Origin: 'https://evil.example' }, reconnection: false });
      await connectError(evil);
      const page = client(srv.url, { transports, extraHeaders: { Origin: 'https://chat.example.com' } });
      await connected(page);
      assert.ok(Number.isSafeInteger((await ack(page, uid('from the listed origin'))).id));
    });
  }

  it('answers 403 to a refused origin, and lets no Origin, the server\'s own and a listed one through', async () => {
    assert.equal(await pollStatus(srv.url, 'https://evil.example'), 403);
    assert.equal(await pollStatus(srv.url, 'null'), 403);
    assert.equal(await pollStatus(srv.url, 'https://chat.example.com.evil.example'), 403);
    assert.equal(await pollStatus(srv.url, undefined), 200);
    assert.equal(await pollStatus(srv.url, srv.url), 200, 'the server\'s own page');
    assert.equal(await pollStatus(srv.url, 'http://localhost:8080'), 200);
    assert.equal(await pollStatus(srv.url, 'HTTPS://CHAT.EXAMPLE.COM:443'), 200, 'any spelling of a listed origin');
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(metrics, /tidings_rejected_total\{reason="origin"\} [1-9]/);
    // The page and /healthz are not sockets: served to anyone.
    assert.equal((await fetch(`${srv.url}/healthz`, { headers: { Origin: 'https://evil.example' } })).status, 200);
  });
});

describe('without --allowed-origins', () => {
  it('every origin may open a socket, as before', async () => {
    const srv = await start();
    const socket = client(srv.url, { transports: ['polling'], extraHeaders: { Origin: 'https://anywhere.example' } });
    await connected(socket);
    assert.equal(await pollStatus(srv.url, 'https://anywhere.example'), 200);
  });

  it('a bad entry stops the server at start-up, naming the flag', async () => {
    await assert.rejects(start({ extraArgs: ['--allowed-origins', 'chat.example.com'] }), /--allowed-origins.*"chat\.example\.com" is not an origin/s);
  });
});
