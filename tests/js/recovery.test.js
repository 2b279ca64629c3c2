'use strict';
// Durable connection state recovery with the official client: `socket.recovered` after a
// transport close and after kill -9 + restart, exactly what was missed, nothing again; the
// refusals (unknown, expired, messages deleted, another database) get a new pid and the usual
// rules; events that are not messages never move the client's offset; the metrics count it.
const { describe, it, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, once, ack, closeAll } = require('./helpers');

// The tutorial's step-6 page: io() with no serverOffset; recovery is all it has. Reconnects
// quickly so the tests stay short.
const STEP6 = { reconnectionDelay: 50, reconnectionDelayMax: 200 };

/** Closes the transport (the client sees "transport close" and reconnects), waits for it. */
async function dropAndReconnect(socket, meanwhile = async () => {}) {
  const reconnected = once(socket, 'connect', 15000);
  socket.io.engine.close();
  await meanwhile();
  await reconnected;
}

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name)) total += Number(line.split(' ').pop());
  }
  return { text, total };
}

describe('connection state recovery', () => {
  afterEach(async () => {
    closeAll();
    await stopAll();
  });
  after(cleanup);

  it('a step-6 client recovers after a transport close: each missed message once, nothing again', async () => {
    const srv = await start();
    const reader = client(srv.url, STEP6);
    const writer = client(srv.url, STEP6);
    await Promise.all([connected(reader), connected(writer)]);
    assert.equal(reader.recovered, false, 'a first connection has nothing to recover');
    assert.match(reader._pid, /^[0-9a-f]{32}$/, 'the CONNECT reply carried a pid');
    const before = [uid('before 1'), uid('before 2')];
    for (const text of before) await ack(writer, text, uid('o'));
    await reader.waitForCount(2);
    assert.equal(reader._lastOffset, '2', "the last message's id, as a string, is the offset");
    const pid = reader._pid;

    const missed = [uid('missed 1'), uid('missed 2'), uid('missed 3')];
    await dropAndReconnect(reader, async () => {
      for (const text of missed) await ack(writer, text, uid('o'));
    });
    assert.equal(reader.recovered, true);
    assert.equal(reader._pid, pid, 'the same session');
    await reader.waitForCount(5);
    const after = uid('after');
    await ack(writer, after, uid('o'));
    await reader.waitForCount(6);
    assert.deepEqual(
      reader.received.map((m) => m.content),
      [...before, ...missed, after],
      'each missed message exactly once, no old message again',
    );
    assert.deepEqual(reader.received.map((m) => m.id), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(reader.offsets, ['1', '2', '3', '4', '5', '6'], 'each message ends in its id');
    const { text } = await metric(srv.url, 'tidings_recoveries_total');
    assert.match(text, /tidings_recoveries_total\{outcome="recovered"\} 1/);
  });

  it('recovers across kill -9 and a restart on the same file', { timeout: 30000 }, async () => {
    let srv = await start();
    const { db, port } = srv;
    const reader = client(srv.url, STEP6);
    await connected(reader);
    const writer1 = client(srv.url, STEP6);
    await connected(writer1);
    const first = uid('first');
    await ack(writer1, first, uid('o'));
    await reader.waitForCount(1);
    const pid = reader._pid;
    const reconnected = once(reader, 'connect', 20000);
    await srv.stop({ signal: 'SIGKILL' });
    srv = await start({ db, port });
    const writer2 = client(srv.url, { reconnection: false });
    await connected(writer2);
    const missed = uid('sent while the reader was away');
    await ack(writer2, missed, uid('o'));
    await reconnected;
    assert.equal(reader.recovered, true, 'the session survived the kill');
    assert.equal(reader._pid, pid);
    await reader.waitForCount(2);
    assert.deepEqual(reader.received.map((m) => m.content), [first, missed]);
    writer1.disconnect();
  });

  it('an unknown pid is refused: a new pid, and the usual rules (serverOffset)', async () => {
    const srv = await start();
    const writer = client(srv.url, STEP6);
    await connected(writer);
    for (let i = 0; i < 3; i++) await ack(writer, uid(`m${i}`), uid('o'));
    const reader = client(srv.url, { ...STEP6, auth: { serverOffset: 2 } });
    await connected(reader);
    await reader.waitForCount(1);
    await dropAndReconnect(reader, () => {
      reader._pid = 'deadbeefdeadbeefdeadbeefdeadbeef'; // never issued here
    });
    assert.equal(reader.recovered, false);
    assert.notEqual(reader._pid, 'deadbeefdeadbeefdeadbeefdeadbeef', 'never the old pid');
    // serverOffset 2 applies again: message 3 once more, as before recovery existed.
    await reader.waitForCount(2);
    assert.deepEqual(reader.received.map((m) => m.id), [3, 3]);
    const { text } = await metric(srv.url, 'tidings_recoveries_total');
    assert.match(text, /outcome="unknown_session"\} 1/);
  });

  it('an expired session is refused', { timeout: 20000 }, async () => {
    const srv = await start({ extraArgs: ['--recovery-window', '1'] });
    const reader = client(srv.url, STEP6);
    const writer = client(srv.url, STEP6);
    await Promise.all([connected(reader), connected(writer)]);
    await ack(writer, uid('m'), uid('o'));
    await reader.waitForCount(1);
    reader.io.reconnection(false);
    reader.disconnect();
    await new Promise((r) => setTimeout(r, 2500)); // longer than the window, since last seen
    reader.connect();
    await connected(reader);
    assert.equal(reader.recovered, false);
    const { text } = await metric(srv.url, 'tidings_recoveries_total');
    assert.match(text, /outcome="expired"\} 1/);
  });

  it('a session whose missed messages retention deleted is refused', { timeout: 30000 }, async () => {
    const srv = await start({ extraArgs: ['--retain-messages', '2'] });
    const reader = client(srv.url, STEP6);
    const writer = client(srv.url, STEP6);
    await Promise.all([connected(reader), connected(writer)]);
    await ack(writer, uid('m1'), uid('o'));
    await reader.waitForCount(1);
    reader.io.reconnection(false);
    reader.disconnect();
    for (let i = 2; i <= 6; i++) await ack(writer, uid(`m${i}`), uid('o'));
    // Retention runs at start and every 10 s: wait until 2..4 are gone.
    const deadline = Date.now() + 15000;
    for (;;) {
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      if (/tidings_pruned_total \d+/.test(text) && Number(text.match(/tidings_pruned_total (\d+)/)[1]) >= 4) break;
      assert.ok(Date.now() < deadline, 'retention never ran');
      await new Promise((r) => setTimeout(r, 200));
    }
    reader.connect();
    await connected(reader);
    assert.equal(reader.recovered, false, 'messages 2..4 are gone: no silent gap');
    const { text } = await metric(srv.url, 'tidings_recoveries_total');
    assert.match(text, /outcome="messages_deleted"\} 1/);
  });

  it('another database (a new file behind the same address) is refused', { timeout: 30000 }, async () => {
    let srv = await start();
    const { port } = srv;
    const reader = client(srv.url, STEP6);
    const writer = client(srv.url, { reconnection: false });
    await Promise.all([connected(reader), connected(writer)]);
    await ack(writer, uid('old'), uid('o'));
    await reader.waitForCount(1);
    const pid = reader._pid;
    const reconnected = once(reader, 'connect', 20000);
    await srv.stop();
    srv = await start({ port }); // a fresh database
    await reconnected;
    assert.equal(reader.recovered, false);
    assert.notEqual(reader._pid, pid);
  });

  it('presence, typing and sync never move the offset; acks neither', async () => {
    const srv = await start();
    const reader = client(srv.url, { ...STEP6, auth: { nickname: 'reader' } });
    const other = client(srv.url, { ...STEP6, auth: { nickname: 'other' } });
    await Promise.all([connected(reader), connected(other)]);
    await ack(other, uid('m'), uid('o'));
    await reader.waitForCount(1);
    assert.equal(reader._lastOffset, '1');
    const events = [];
    reader.onAny((event) => events.push(event));
    other.emit('typing', true);
    await once(reader, 'typing');
    other.disconnect();
    await once(reader, 'presence', 5000);
    await reader.timeout(5000).emitWithAck('history', { limit: 1 });
    assert.ok(events.includes('typing') && events.includes('presence'), JSON.stringify(events));
    assert.equal(reader._lastOffset, '1', 'still the last message');
  });

  it('with --recovery-window 0 no pid is sent and messages carry no offset', async () => {
    const srv = await start({ extraArgs: ['--recovery-window', '0'] });
    const reader = client(srv.url, STEP6);
    const writer = client(srv.url, STEP6);
    await Promise.all([connected(reader), connected(writer)]);
    await ack(writer, uid('m'), uid('o'));
    await reader.waitForCount(1);
    assert.equal(reader._pid, undefined);
    assert.deepEqual(reader.received.map((m) => m.id), [1]);
    assert.deepEqual(reader.offsets, [], 'no trailing offset');
  });
});
