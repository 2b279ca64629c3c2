'use strict';
// Rooms with the official client, shape by shape as issue 28 and README's "Rooms" write them:
// auth.rooms, `join (room, ack)` -> { room, last }, `leave` -> { ok: true }, `chat message
// (content, clientOffset, { author, room })` and its delivery (content, id, { author, time, room },
// "id"), `history ({ room, before, limit })`, the `rooms` directory, presence and typing per room,
// exactly-once per room, and recovery back into every room with one offset.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { uid, client, connected, connectError, once, ack, serverPerTest } = require('./helpers');

const ROOM_RULE = "1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter or a digit";

/** Emits `event` with `args` and an ack; resolves with the ack's first argument. */
function request(socket, event, ...args) {
  return socket.timeout(5000).emitWithAck(event, ...args);
}

/** Sends `content` to `room`; resolves with the ack. */
function sendTo(socket, room, content, offset = uid('o'), author = undefined) {
  return ack(socket, content, offset, author ? { author, room } : { room });
}

/** Collects the events named `event` a socket receives, as argument arrays. */
function record(socket, event) {
  const seen = [];
  socket.on(event, (...args) => seen.push(args));
  return seen;
}

/** Waits until pred() is true, checking every 20 ms; fails with `what` after 5 s. */
async function until(pred, what) {
  const deadline = Date.now() + 5000;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('rooms', () => {
  const srv = serverPerTest();

  it('a room\'s messages reach its members only, with the room in the delivery, and the ack shapes', async () => {
    const dev = client(srv().url, { auth: { serverOffset: 0, rooms: ['dev'] } });
    const both = client(srv().url, { auth: { serverOffset: 0, rooms: ['general', 'dev'] } });
    // A tutorial client: no rooms, the default room.
    const tutorial = client(srv().url, { auth: { serverOffset: 0 } });
    await Promise.all([connected(dev), connected(both), connected(tutorial)]);

    const inDev = uid('to dev');
    const res = await sendTo(dev, 'dev', inDev, uid('o'), 'ada');
    assert.deepEqual(res, { id: 1 });
    const inGeneral = uid('to general');
    assert.deepEqual(await ack(tutorial, inGeneral, uid('o')), { id: 2 });

    await both.waitForCount(2);
    assert.deepEqual(both.received, [
      { content: inDev, id: 1 },
      { content: inGeneral, id: 2 },
    ]);
    assert.deepEqual(
      both.metas.map(({ id, author, room }) => ({ id, author, room })),
      [
        { id: 1, author: 'ada', room: 'dev' },
        { id: 2, author: null, room: 'general' },
      ],
    );
    assert.deepEqual(both.offsets, ['1', '2'], 'each delivery ends with its id as a string');
    await dev.waitForCount(1);
    await tutorial.waitForCount(1);
    // Each room's members only.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(dev.received, [{ content: inDev, id: 1 }]);
    assert.deepEqual(tutorial.received, [{ content: inGeneral, id: 2 }]);

    // Sending to a room the socket is not in: refused, nothing stored.
    const refused = await sendTo(dev, 'ops', uid('nope'));
    assert.deepEqual(refused, { error: 'not in room ops: join it first' });
    const bad = await sendTo(dev, 'Dev', uid('nope'));
    assert.deepEqual(bad, { error: `invalid room: invalid room name "Dev": ${ROOM_RULE}` });
    assert.deepEqual(await sendTo(dev, 'dev', uid('next')), { id: 3 }, 'nothing was stored meanwhile');
  });

  it('an invalid auth.rooms is a connect_error naming the problem', async () => {
    for (const [rooms, message] of [
      ['dev', 'invalid rooms: expected a list of room names, got string'],
      [['dev', 'No'], `invalid rooms: invalid room name "No": ${ROOM_RULE}`],
      [['dev', 7], 'invalid rooms: a room name must be a string, got number'],
    ]) {
      const socket = client(srv().url, { auth: { rooms }, reconnection: false });
      const err = await connectError(socket);
      assert.equal(err.message, message);
      socket.disconnect();
    }
    // An empty list: connected, in no room until it joins one.
    const nowhere = client(srv().url, { auth: { rooms: [] } });
    await connected(nowhere);
    const writer = client(srv().url, { auth: {} });
    await connected(writer);
    await ack(writer, uid('general'), uid('o'));
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(nowhere.received, []);
  });

  it('join answers { room, last }; live after last and history up to it meet with no gap and no duplicate', async () => {
    const writer = client(srv().url, { auth: { rooms: ['dev'] } });
    await connected(writer);
    const before = [];
    for (let i = 0; i < 5; i++) {
      const content = uid(`before ${i}`);
      before.push({ content, id: (await sendTo(writer, 'dev', content)).id });
    }
    const joiner = client(srv().url, { auth: { rooms: [] }, trackOffset: true });
    await connected(joiner);
    const joined = await request(joiner, 'join', 'dev');
    assert.deepEqual(joined, { room: 'dev', last: 5 });
    const after = uid('after');
    const { id: afterId } = await sendTo(writer, 'dev', after);
    await joiner.waitForCount(1);
    assert.deepEqual(joiner.received, [{ content: after, id: afterId }], 'live: only ids above last');

    const page = await request(joiner, 'history', { room: 'dev', before: joined.last + 1 });
    assert.equal(page.hasMore, false);
    assert.deepEqual(
      page.messages.map(({ id, content, room }) => ({ id, content, room })),
      before.map(({ id, content }) => ({ id, content, room: 'dev' })),
    );
    for (const m of page.messages) {
      assert.equal(m.author, null);
      assert.ok(Number.isSafeInteger(m.time));
    }
    // The client's recovery offset is the last chat message it processed; history never moves it.
    assert.equal(joiner._lastOffset, String(afterId));

    // Joining again answers the same; leaving answers { ok: true }, also for a room it is not in.
    assert.deepEqual(await request(joiner, 'join', 'dev'), { room: 'dev', last: 5 });
    assert.deepEqual(await request(joiner, 'leave', 'dev'), { ok: true });
    assert.deepEqual(await request(joiner, 'leave', 'dev'), { ok: true });
    assert.deepEqual(await request(joiner, 'join', 'no room'), { error: `invalid room name "no room": ${ROOM_RULE}` });
    await sendTo(writer, 'dev', uid('after leaving'));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(joiner.received.length, 1, 'nothing of a room after leaving it');
  });

  it('history with no room is the default room\'s; the directory lists rooms by name and pages', async () => {
    const a = client(srv().url, { auth: { rooms: ['general', 'dev', 'ops'] } });
    const b = client(srv().url, { auth: { rooms: ['dev', 'empty'] } });
    await Promise.all([connected(a), connected(b)]);
    await sendTo(a, 'ops', uid('ops'));
    await sendTo(a, 'dev', uid('dev'));
    const hello = uid('general');
    await ack(a, hello, uid('o'));
    const page = await request(a, 'history', {});
    assert.deepEqual(page.messages.map((m) => [m.content, m.room]), [[hello, 'general']]);

    const all = await request(a, 'rooms');
    assert.deepEqual(all, {
      rooms: [
        { name: 'dev', members: 2, last: 2 },
        { name: 'empty', members: 1, last: 0 },
        { name: 'general', members: 1, last: 3 },
        { name: 'ops', members: 1, last: 1 },
      ],
    });
    assert.deepEqual(await request(a, 'rooms', { after: 'empty' }), {
      rooms: [
        { name: 'general', members: 1, last: 3 },
        { name: 'ops', members: 1, last: 1 },
      ],
    });
  });

  it('presence and typing are per room; typing (bool) means the default room', async () => {
    const ada = client(srv().url, { auth: { rooms: ['general', 'dev'], nickname: 'ada' } });
    const adaPresence = record(ada, 'presence');
    const adaTyping = record(ada, 'typing');
    await connected(ada);
    await until(() => adaPresence.length >= 2, 'ada\'s presence in both rooms');
    const rooms = adaPresence.map(([p]) => p.room).sort();
    assert.deepEqual(rooms, ['dev', 'general']);
    for (const [p] of adaPresence) {
      assert.deepEqual(Object.keys(p).sort(), ['count', 'joined', 'joinedCount', 'left', 'leftCount', 'room', 'users']);
      assert.deepEqual(p.users, ['ada']);
    }

    const bo = client(srv().url, { auth: { rooms: ['dev'], nickname: 'bo' } });
    const boTyping = record(bo, 'typing');
    await connected(bo);
    await until(
      () => adaPresence.some(([p]) => p.room === 'dev' && p.users.includes('bo')),
      'bo in dev\'s presence',
    );
    assert.ok(
      !adaPresence.some(([p]) => p.room === 'general' && p.users.includes('bo')),
      'bo is not in general',
    );

    bo.emit('typing', { room: 'dev', typing: true });
    await until(() => adaTyping.length >= 1, 'typing in dev');
    assert.deepEqual(adaTyping[0], [{ room: 'dev', nickname: 'bo', typing: true }]);
    // bo is not in general: ignored. ada's typing (bool) is the default room's: bo is not there.
    bo.emit('typing', { room: 'general', typing: true });
    ada.emit('typing', true);
    ada.emit('typing', { room: 'dev', typing: true });
    await until(() => boTyping.length >= 1, 'ada typing in dev');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(boTyping, [[{ room: 'dev', nickname: 'ada', typing: true }]]);
    assert.equal(adaTyping.length, 1);
  });

  it('exactly once per room: the same offset and content in two rooms are two messages', async () => {
    const socket = client(srv().url, { auth: { rooms: ['dev', 'ops'] } });
    await connected(socket);
    const [content, offset] = [uid('same'), uid('offset')];
    assert.deepEqual(await sendTo(socket, 'dev', content, offset), { id: 1 });
    assert.deepEqual(await sendTo(socket, 'ops', content, offset), { id: 2 });
    assert.deepEqual(await sendTo(socket, 'dev', content, offset), { id: 1, duplicate: true });
    assert.deepEqual(await sendTo(socket, 'ops', content, offset), { id: 2, duplicate: true });
  });

  it('one offset recovers every room: socket.recovered, back in each room, exactly what was missed', async () => {
    const reader = client(srv().url, {
      auth: { rooms: ['dev'] },
      reconnectionDelay: 50,
      reconnectionDelayMax: 200,
    });
    const writer = client(srv().url, { auth: { rooms: ['dev', 'ops', 'qa'] } });
    await Promise.all([connected(reader), connected(writer)]);
    assert.deepEqual(await request(reader, 'join', 'ops'), { room: 'ops', last: 0 });
    const seen = [await sendTo(writer, 'dev', uid('d1')), await sendTo(writer, 'ops', uid('o1'))];
    await reader.waitForCount(2);

    const reconnected = once(reader, 'connect', 15000);
    reader.io.engine.close();
    const missed = [];
    for (const [room, label] of [['qa', 'q'], ['ops', 'o2'], ['dev', 'd2'], ['qa', 'q2']]) {
      const content = uid(label);
      const { id } = await sendTo(writer, room, content);
      if (room !== 'qa') missed.push({ content, id });
    }
    await reconnected;
    assert.equal(reader.recovered, true);
    await reader.waitForCount(4);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(reader.received.slice(2), missed, 'its rooms\' messages after its offset, once, in id order');
    assert.equal(reader.received.length, 4);
    // Back in ops too (joined after connecting): live messages of it arrive.
    const live = uid('live in ops');
    const { id } = await sendTo(writer, 'ops', live);
    await reader.waitForContent(live);
    assert.equal(reader._lastOffset, String(id));
    assert.deepEqual(seen.map((s) => s.id), [1, 2]);
  });
});
