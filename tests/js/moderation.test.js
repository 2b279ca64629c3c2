'use strict';
// Access to rooms and moderation (--auth optional/required): `create room`, private and
// read-only rooms, `invite`, `set role`, `kick`, `ban`/`unban`, `mute`/`unmute`, `delete
// message` with tombstones, the directory and `auth.rooms` for private rooms, server admins,
// the state across a restart; and with --auth off, every such request answered `{ error }`.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, ack, once, closeAll } = require('./helpers');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-moderation-'));
const SECRET = crypto.randomBytes(48).toString('base64');
const secretFile = path.join(dir, 'secret');
fs.writeFileSync(secretFile, SECRET + '\n');

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** An HS256 token for `sub`, valid ten minutes. */
function token(sub, name) {
  const message = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, name, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${message}.${crypto.createHmac('sha256', SECRET).update(message).digest('base64url')}`;
}

const AUTH = ['--auth', 'optional', '--jwt-secret-file', secretFile, '--server-admin', 'root'];

/** Emits `event (...args, ack)` and resolves with the ack (bounded by a timeout). */
const request = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

/** A connected client signed in as `sub` (anonymous when null), in `rooms` (none by default). */
async function user(srv, sub, { rooms = [], ...auth } = {}) {
  const socket = client(srv.url, { auth: { ...(sub ? { token: token(sub) } : {}), rooms, ...auth } });
  socket.changes = [];
  socket.deletions = [];
  socket.on('room changed', (change) => socket.changes.push(change));
  socket.on('message deleted', (deletion) => socket.deletions.push(deletion));
  await connected(socket);
  return socket;
}

/** Sends `content` to `room`; resolves with the ack. */
const post = (socket, room, content, offset = uid('o')) => ack(socket, content, offset, { room });

/** Waits until pred() is true, checking every 20 ms; fails with `what` after 5 s. */
async function until(pred, what) {
  const deadline = Date.now() + 5000;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Calls `make` until what it resolves to equals `expected`, every 20 ms for at most 5 s. */
async function eventually(make, expected) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const got = await make();
    if (JSON.stringify(got) === JSON.stringify(expected)) return;
    if (Date.now() > deadline) assert.deepEqual(got, expected);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The names the directory lists to `socket`. */
async function listed(socket) {
  const { rooms } = await request(socket, 'rooms');
  return rooms.map((room) => (room.private ? `${room.name} (private)` : room.name));
}

afterEach(() => closeAll());
after(async () => {
  closeAll();
  await stopAll();
  cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--auth off: no identities, no moderation', () => {
  let srv;
  before(async () => {
    srv = await start();
  });

  it('answers every moderation request with an error and keeps every room public', async () => {
    const socket = await user(srv, null, { rooms: ['general'] });
    const error = { error: 'not allowed: moderation needs --auth optional or required' };
    for (const [event, args] of [
      ['create room', { room: 'ops', private: true }],
      ['set role', { room: 'general', user: 'bob', role: 'moderator' }],
      ['invite', { room: 'general', user: 'bob' }],
      ['kick', { room: 'general', user: 'bob' }],
      ['ban', { room: 'general', user: 'bob' }],
      ['unban', { room: 'general', user: 'bob' }],
      ['mute', { room: 'general', user: 'bob' }],
      ['unmute', { room: 'general', user: 'bob' }],
      ['delete message', { room: 'general', id: 1 }],
    ]) {
      assert.deepEqual(await request(socket, event, args), error, event);
    }
    assert.deepEqual(await request(socket, 'join', 'ops'), { room: 'ops', last: 0 });
  });
});

describe('access to rooms', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: AUTH });
  });

  it('create room: the creator owns and joins it; a name that exists is refused; anonymous clients cannot', async () => {
    const alice = await user(srv, 'alice');
    assert.deepEqual(await request(alice, 'create room', { room: 'c-ops', private: true }), { room: 'c-ops', ok: true, last: 0 });
    const text = uid('first');
    assert.ok(Number.isSafeInteger((await post(alice, 'c-ops', text)).id), 'the creator is in the room');
    const bob = await user(srv, 'bob');
    assert.deepEqual(await request(bob, 'create room', { room: 'c-ops' }), { error: 'room exists' });
    // A public room that exists because someone joined it exists too.
    await request(bob, 'join', 'c-lobby');
    assert.deepEqual(await request(alice, 'create room', { room: 'c-lobby', private: true }), { error: 'room exists' });
    assert.deepEqual(await request(alice, 'create room', { room: 'general', private: true }), { error: 'room exists' }, 'the default room always exists');
    const anonymous = await user(srv, null);
    assert.deepEqual(await request(anonymous, 'create room', { room: 'c-mine' }), { error: 'not allowed: sign in first' });
    assert.deepEqual(await request(alice, 'create room', { room: 'No Room' }), {
      error: 'invalid room: invalid room name "No Room": 1 to 64 characters from a-z, 0-9, \'-\' and \'_\', starting with a letter or a digit',
    });
    assert.deepEqual(await request(alice, 'create room', { room: 'c-x', private: 'yes' }), { error: 'invalid private: true or false' });
  });

  it('a private room: members only, left out of the directory and of auth.rooms (named in sync), admins everywhere', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'p-ops', private: true });
    const bob = await user(srv, 'bob');
    assert.deepEqual(await request(bob, 'join', 'p-ops'), { error: 'not allowed' });
    assert.deepEqual(await request(bob, 'history', { room: 'p-ops', limit: 10 }), { error: 'not allowed' }, 'nor its history');
    assert.ok(!(await listed(bob)).some((name) => name.startsWith('p-ops')), 'not listed to bob');
    assert.ok((await listed(alice)).includes('p-ops (private)'), 'listed to its owner');
    const anonymous = await user(srv, null);
    assert.ok(!(await listed(anonymous)).some((name) => name.startsWith('p-ops')));
    assert.deepEqual(await request(anonymous, 'join', 'p-ops'), { error: 'not allowed' });
    // auth.rooms: the private room is left out, the others joined, the refusal named in sync.
    const asking = client(srv.url, { auth: { token: token('bob'), rooms: ['p-ops', 'p-general'] } });
    const sync = once(asking, 'sync');
    await connected(asking);
    const [report] = await sync;
    assert.deepEqual(report.refused, ['p-ops']);
    assert.deepEqual(await request(asking, 'join', 'p-general'), { room: 'p-general', last: 0 }, 'in p-general already');
    assert.deepEqual(await post(asking, 'p-ops', 'sneaky'), { error: 'not in room p-ops: join it first' });
    // A server admin acts as an owner everywhere.
    const root = await user(srv, 'root');
    assert.equal((await request(root, 'join', 'p-ops')).room, 'p-ops');
    assert.ok((await listed(root)).includes('p-ops (private)'));
  });

  it('invite makes a member (without joining their sockets); only owners and moderators invite, and only to private rooms', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'i-ops', private: true });
    const bob = await user(srv, 'bob');
    assert.deepEqual(await request(bob, 'invite', { room: 'i-ops', user: 'bob' }), { error: 'not allowed' });
    assert.deepEqual(await request(alice, 'invite', { room: 'i-ops', user: 'bob' }), { ok: true });
    await until(() => alice.changes.some((c) => c.action === 'invite'), 'the invite notice');
    const notice = alice.changes.find((c) => c.action === 'invite');
    assert.deepEqual({ ...notice, offset: undefined }, { room: 'i-ops', action: 'invite', user: 'bob', by: 'alice', offset: undefined });
    assert.ok(Number.isSafeInteger(notice.offset));
    assert.ok((await listed(bob)).includes('i-ops (private)'), 'listed to the member now');
    const joined = await request(bob, 'join', 'i-ops');
    assert.equal(joined.room, 'i-ops');
    const text = uid('hello members');
    await post(bob, 'i-ops', text);
    await alice.waitForContent(text);
    // A member cannot invite; a public room needs no invitation.
    assert.deepEqual(await request(bob, 'invite', { room: 'i-ops', user: 'carol' }), { error: 'not allowed' });
    await request(alice, 'create room', { room: 'i-lobby' });
    assert.deepEqual(await request(alice, 'invite', { room: 'i-lobby', user: 'bob' }), {
      error: 'invite is for private rooms: anyone may join this one',
    });
    assert.deepEqual(await request(alice, 'invite', { room: 'i-nowhere', user: 'bob' }), { error: 'no such room' });
  });

  it('kick: every socket of the user leaves now; a private room\'s member is a member no more', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'k-ops', private: true });
    await request(alice, 'invite', { room: 'k-ops', user: 'bob' });
    const bob1 = await user(srv, 'bob', { rooms: ['k-ops'] });
    const bob2 = await user(srv, 'bob');
    await request(bob2, 'join', 'k-ops');
    assert.deepEqual(await request(alice, 'kick', { room: 'k-ops', user: 'bob' }), { ok: true });
    for (const bob of [bob1, bob2]) {
      await until(() => bob.changes.some((c) => c.action === 'kick'), 'the kick notice');
      const kicks = bob.changes.filter((c) => c.action === 'kick');
      assert.equal(kicks.length, 1, 'told once');
      assert.deepEqual((({ room, user, by }) => ({ room, user, by }))(kicks[0]), { room: 'k-ops', user: 'bob', by: 'alice' });
    }
    for (const bob of [bob1, bob2]) {
      // The notice may come a moment before the socket has left: the post is refused either
      // way (bob is no member), and once out, for not being in the room.
      await eventually(() => post(bob, 'k-ops', 'still here?'), { error: 'not in room k-ops: join it first' });
      assert.deepEqual(await request(bob, 'join', 'k-ops'), { error: 'not allowed' });
    }
    // Nothing more of the room reaches them.
    const after = uid('after the kick');
    await post(alice, 'k-ops', after);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!bob1.received.some((m) => m.content === after));
  });

  it('ban: a kick that lasts until unban, in a public room too, at connect as well', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'b-lobby' });
    const bob = await user(srv, 'bob', { rooms: ['b-lobby'] });
    assert.deepEqual(await request(alice, 'ban', { room: 'b-lobby', user: 'bob' }), { ok: true });
    // Its replay (from offset 0) had the room's creation; the ban comes live.
    await until(() => bob.changes.some((c) => c.action === 'ban' && c.user === 'bob'), 'the ban notice');
    assert.equal(bob.changes[0].action, 'create');
    await eventually(() => post(bob, 'b-lobby', 'hello?'), { error: 'not in room b-lobby: join it first' });
    assert.deepEqual(await request(bob, 'join', 'b-lobby'), { error: 'banned from this room' });
    assert.deepEqual(await request(bob, 'history', { room: 'b-lobby' }), { error: 'banned from this room' });
    const again = client(srv.url, { auth: { token: token('bob'), rooms: ['b-lobby'] } });
    const sync = once(again, 'sync');
    await connected(again);
    assert.deepEqual((await sync)[0].refused, ['b-lobby']);
    assert.deepEqual(await request(alice, 'unban', { room: 'b-lobby', user: 'bob' }), { ok: true });
    assert.equal((await request(bob, 'join', 'b-lobby')).room, 'b-lobby');
  });

  it('mute stops posts, not reading; unmute lets them post again', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'm-lobby' });
    const bob = await user(srv, 'bob', { rooms: ['m-lobby'] });
    assert.deepEqual(await request(alice, 'mute', { room: 'm-lobby', user: 'bob' }), { ok: true });
    assert.deepEqual(await post(bob, 'm-lobby', 'let me speak'), { error: 'muted in this room' });
    const text = uid('bob still reads');
    await post(alice, 'm-lobby', text);
    await bob.waitForContent(text);
    assert.deepEqual(await request(alice, 'unmute', { room: 'm-lobby', user: 'bob' }), { ok: true });
    assert.ok(Number.isSafeInteger((await post(bob, 'm-lobby', 'thanks')).id));
  });

  it('set role: owners make moderators, who moderate those below them only', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'r-lobby' });
    const carol = await user(srv, 'carol', { rooms: ['r-lobby'] });
    assert.deepEqual(await request(carol, 'mute', { room: 'r-lobby', user: 'dave' }), { error: 'not allowed' });
    assert.deepEqual(await request(alice, 'set role', { room: 'r-lobby', user: 'carol', role: 'moderator' }), { ok: true });
    await until(() => carol.changes.some((c) => c.action === 'role'), 'the role notice');
    assert.equal(carol.changes.find((c) => c.action === 'role').role, 'moderator');
    assert.deepEqual(await request(carol, 'mute', { room: 'r-lobby', user: 'dave' }), { ok: true });
    assert.deepEqual(await request(carol, 'set role', { room: 'r-lobby', user: 'dave', role: 'moderator' }), { error: 'not allowed' });
    assert.deepEqual(await request(carol, 'ban', { room: 'r-lobby', user: 'alice' }), { error: 'not allowed' });
    assert.deepEqual(await request(alice, 'set role', { room: 'r-lobby', user: 'carol', role: 'owner' }), {
      error: 'invalid role: "moderator" or "member"',
    });
    // A server admin outranks the owner.
    const root = await user(srv, 'root');
    assert.deepEqual(await request(root, 'mute', { room: 'r-lobby', user: 'alice' }), { ok: true });
  });

  it('a read-only room: members read, only moderators post', async () => {
    const alice = await user(srv, 'alice');
    assert.deepEqual(await request(alice, 'create room', { room: 'news', readOnly: true }), { room: 'news', ok: true, last: 0 });
    const bob = await user(srv, 'bob', { rooms: ['news'] });
    assert.deepEqual(await post(bob, 'news', 'hi'), { error: 'read-only room: only moderators post' });
    // The directory says so, and what the asking user is in it.
    const entry = async (socket) => (await request(socket, 'rooms')).rooms.find((r) => r.name === 'news');
    const seen = await entry(alice);
    assert.deepEqual({ readOnly: seen.readOnly, role: seen.role, private: seen.private }, { readOnly: true, role: 'owner', private: undefined });
    assert.equal((await entry(bob)).role, undefined, 'bob has no role');
    const text = uid('announcement');
    await post(alice, 'news', text);
    await bob.waitForContent(text);
  });

  it('delete message: the author or a moderator; gone from history and replay, a retry is a duplicate, offline clients learn it', async () => {
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 'd-lobby' });
    const bob = await user(srv, 'bob', { rooms: ['d-lobby'] });
    const carol = await user(srv, 'carol', { rooms: ['d-lobby'] });
    const content = uid('regrettable');
    const offset = uid('o');
    const { id } = await post(bob, 'd-lobby', content, offset);
    await carol.waitForContent(content);
    assert.deepEqual(await request(carol, 'delete message', { room: 'd-lobby', id }), { error: 'not allowed' });
    assert.deepEqual(await request(bob, 'delete message', { room: 'other', id }), { error: 'no such message in this room' });
    assert.deepEqual(await request(alice, 'delete message', { room: 'd-lobby', id }), { ok: true });
    await until(() => carol.deletions.length === 1 && bob.deletions.length === 1, 'the deletion notices');
    const notice = carol.deletions[0];
    assert.deepEqual({ room: notice.room, id: notice.id, by: notice.by }, { room: 'd-lobby', id, by: 'alice' });
    assert.ok(notice.offset > id);
    assert.deepEqual(await request(alice, 'delete message', { room: 'd-lobby', id }), { error: 'no such message in this room' }, 'once');
    // History no longer returns it; nor a replay from before it.
    const page = await request(carol, 'history', { room: 'd-lobby', limit: 50 });
    assert.ok(!page.messages.some((m) => m.id === id || m.content === content), JSON.stringify(page));
    const late = client(srv.url, { auth: { token: token('dave'), rooms: ['d-lobby'], serverOffset: 0 } });
    late.deletions = [];
    late.on('message deleted', (d) => late.deletions.push(d));
    const lateSync = once(late, 'sync');
    await connected(late);
    await lateSync;
    assert.ok(!late.received.some((m) => m.content === content), 'the replay skips it');
    // A client offline since it got the message learns of the deletion when it comes back.
    const back = client(srv.url, { auth: { token: token('erin'), rooms: ['d-lobby'], serverOffset: id } });
    const learned = once(back, 'message deleted');
    await connected(back);
    assert.deepEqual((({ room, id: deleted, by }) => ({ room, id: deleted, by }))((await learned)[0]), { room: 'd-lobby', id, by: 'alice' });
    // The author's retry of the deleted message is answered, not stored again.
    assert.deepEqual(await post(bob, 'd-lobby', content, offset), { id, duplicate: true });
    // Authors delete their own messages.
    const own = await post(bob, 'd-lobby', uid('mine'));
    assert.deepEqual(await request(bob, 'delete message', { room: 'd-lobby', id: own.id }), { ok: true });
    assert.deepEqual(await request(bob, 'delete message', { room: 'd-lobby', id: 0 }), { error: 'invalid id: a message id is a positive integer' });
  });

  it('a request about a room that does not exist, or with bad arguments, says so', async () => {
    const alice = await user(srv, 'alice');
    assert.deepEqual(await request(alice, 'kick', { room: 'nowhere', user: 'bob' }), { error: 'no such room' });
    assert.deepEqual(await request(alice, 'kick', { room: 'nowhere' }), { error: 'invalid user: a user id is a string of 1 to 256 bytes' });
    assert.deepEqual(await request(alice, 'ban', 'bob'), { error: 'expected ban ({ room, user }, ack), got string' });
  });
});

describe('access state survives a restart', () => {
  it('private rooms, roles, bans and deletions are in the database', async () => {
    let srv = await start({ extraArgs: AUTH });
    const alice = await user(srv, 'alice');
    await request(alice, 'create room', { room: 's-ops', private: true });
    await request(alice, 'invite', { room: 's-ops', user: 'bob' });
    await request(alice, 'create room', { room: 's-lobby' });
    await request(alice, 'ban', { room: 's-lobby', user: 'mallory' });
    const { id } = await post(alice, 's-lobby', uid('to delete'));
    await request(alice, 'delete message', { room: 's-lobby', id });
    closeAll();
    const { db, port } = srv;
    await srv.stop({ signal: 'SIGKILL' });
    srv = await start({ db, port, extraArgs: AUTH });
    const bob = await user(srv, 'bob');
    assert.equal((await request(bob, 'join', 's-ops')).room, 's-ops', 'still a member');
    const carol = await user(srv, 'carol');
    assert.deepEqual(await request(carol, 'join', 's-ops'), { error: 'not allowed' });
    const mallory = await user(srv, 'mallory');
    assert.deepEqual(await request(mallory, 'join', 's-lobby'), { error: 'banned from this room' });
    const page = await request(carol, 'history', { room: 's-lobby', limit: 10 });
    assert.deepEqual(page, { messages: [], hasMore: false });
    assert.deepEqual(await request(bob, 'create room', { room: 's-ops' }), { error: 'room exists' });
  });
});
