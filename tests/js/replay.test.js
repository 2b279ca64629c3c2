'use strict';
// c) Replay on connection: a client with auth.serverOffset k gets ids k+1..N, in order.
const { describe, it, beforeEach, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, ack, closeAll } = require('./helpers');

const N = 6;

describe('replay from auth.serverOffset', () => {
  let srv;
  let writer;
  let history; // [{ content, id }] for ids 1..N

  beforeEach(async () => {
    srv = await start();
    writer = client(srv.url, { auth: { serverOffset: 0 } });
    await connected(writer);
    history = [];
    for (let i = 1; i <= N; i++) {
      const content = uid(`replay msg${i}`);
      assert.deepEqual(await ack(writer, content, uid('offset')), { id: i });
      history.push({ content, id: i });
    }
  });
  afterEach(async () => {
    closeAll();
    await stopAll();
  });
  after(cleanup);

  /**
   * Connect with this serverOffset, expect exactly `expected` replayed, then exactly one live
   * message (which proves nothing else was replayed). Returns that live message.
   */
  async function expectReplay(serverOffset, expected) {
    const reader = client(srv.url, { auth: { serverOffset } });
    await connected(reader);
    await reader.waitForCount(expected.length);
    const content = uid('replay live');
    const { id } = await ack(writer, content, uid('offset'));
    const all = [...expected, { content, id }];
    assert.deepEqual(await reader.waitForCount(all.length), all, `serverOffset ${JSON.stringify(serverOffset)}`);
    return { content, id };
  }

  it('serverOffset k replays exactly ids k+1..N in order', { timeout: 20000 }, async () => {
    const live = await expectReplay(2, history.slice(2));
    assert.equal(live.id, N + 1);
  });

  it('serverOffset 0 replays the whole history', { timeout: 20000 }, async () => {
    await expectReplay(0, history);
  });

  it('serverOffset equal to the newest id replays nothing', { timeout: 20000 }, async () => {
    await expectReplay(N, []);
  });

  it('serverOffset above the newest id replays the whole history from id 1', { timeout: 20000 }, async () => {
    const live = await expectReplay(N + 1, history);
    assert.equal(live.id, N + 1);
    await expectReplay(1000, [...history, live]);
  });

  it('serverOffset as an integer-valued string "3" works like 3', { timeout: 20000 }, async () => {
    await expectReplay('3', history.slice(3));
  });

  it('a client connecting while another sends sees every id once, in order', { timeout: 30000 }, async () => {
    const opts = { auth: { serverOffset: N }, ackTimeout: 10000, retries: 3 };
    const sender = client(srv.url, opts);
    await connected(sender);
    const total = N + 40;
    const contents = [];
    for (let i = N + 1; i <= total; i++) {
      const content = uid(`replay race msg${i}`);
      contents.push(content);
      sender.emit('chat message', content, uid('offset'));
    }
    await sender.waitFor((r) => r.length >= 5, '5 live messages'); // connect mid-stream
    const reader = client(srv.url, { auth: { serverOffset: 0 } });
    await connected(reader);
    await sender.waitForCount(total - N);
    const follow = uid('replay race follow-up');
    assert.deepEqual(await ack(writer, follow, uid('offset')), { id: total + 1 });
    const got = await reader.waitFor((r) => r.some((m) => m.id === total + 1), `id ${total + 1}`, 10000);
    assert.deepEqual(
      got.map((m) => m.id),
      Array.from({ length: total + 1 }, (_, i) => i + 1),
      'ids seen by the client that connected mid-stream',
    );
    assert.deepEqual(
      got.map((m) => m.content),
      [...history.map((m) => m.content), ...contents, follow],
    );
  });
});
