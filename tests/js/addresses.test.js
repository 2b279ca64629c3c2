'use strict';
// --max-connections-per-ip and --trusted-proxies: the per-address limit counts the client's
// address, which behind a proxy is the one its X-Forwarded-For names, believed only from a
// trusted proxy; a client cannot name its own address. The official client, over websocket
// and long-polling.
const { describe, it, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { client, connected, connectError, closeAll } = require('./helpers');

afterEach(() => closeAll());
after(async () => {
  closeAll();
  await stopAll();
  cleanup();
});

const refusal = /^too many connections from your address: (\d+), the limit$/;

describe('--max-connections-per-ip', () => {
  it('refuses one connection too many from an address, and takes it again once one closes', async () => {
    const srv = await start({ extraArgs: ['--max-connections-per-ip', '2'] });
    const a = client(srv.url);
    const b = client(srv.url, { transports: ['polling'] });
    await Promise.all([connected(a), connected(b)]);
    const c = client(srv.url, { reconnection: false });
    assert.match((await connectError(c)).message, refusal);
    // A client cannot name another address for itself.
    const forged = client(srv.url, { query: { tidings_client: '198.51.100.9' }, reconnection: false });
    assert.match((await connectError(forged)).message, refusal);
    a.disconnect();
    const deadline = Date.now() + 5000;
    for (;;) {
      const d = client(srv.url, { reconnection: false });
      try {
        await connected(d);
        break;
      } catch (e) {
        d.disconnect();
        assert.ok(Date.now() < deadline, `still refused after a disconnect: ${e.message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });

  it('behind a trusted proxy, counts the address its X-Forwarded-For names', async () => {
    const srv = await start({ extraArgs: ['--max-connections-per-ip', '1', '--trusted-proxies', '127.0.0.1,10.0.0.0/8'] });
    const from = (address, transports = ['websocket']) =>
      client(srv.url, { transports, extraHeaders: { 'X-Forwarded-For': address }, reconnection: false });
    await connected(from('203.0.113.1'));
    await connected(from('203.0.113.2', ['polling']));
    // The last address that is not a trusted proxy: 198.51.100.7.
    await connected(from('198.51.100.7, 10.0.0.3'));
    assert.match((await connectError(from('203.0.113.1'))).message, refusal);
    assert.match((await connectError(from('203.0.113.2', ['polling']))).message, refusal);
    // Without the header, the proxy's own address is the client's.
    await connected(client(srv.url));
  });

  it('ignores X-Forwarded-For from anyone else', async () => {
    const srv = await start({ extraArgs: ['--max-connections-per-ip', '1'] });
    await connected(client(srv.url, { extraHeaders: { 'X-Forwarded-For': '203.0.113.1' } }));
    const other = client(srv.url, { extraHeaders: { 'X-Forwarded-For': '203.0.113.2' }, reconnection: false });
    assert.match((await connectError(other)).message, refusal);
  });

  it('refuses a bad --trusted-proxies entry or limit at start-up, naming the flag', async () => {
    await assert.rejects(start({ extraArgs: ['--trusted-proxies', '10.0.0.0/33'] }), /--trusted-proxies.*"10\.0\.0\.0\/33" is not an address or a network/s);
    await assert.rejects(start({ extraArgs: ['--max-connections-per-ip', '-1'] }), /--max-connections-per-ip/);
  });
});
