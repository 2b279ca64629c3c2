'use strict';
// Identity (--auth): signed tokens checked at connect and for the life of the connection,
// verified authors, token expiry and refresh, recovery bound to its user; with the official
// client, tokens made by node:crypto by hand (for the refusals a library will not sign) and by
// the README's examples (Node's jsonwebtoken, Python's PyJWT).
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { start, stopAll, cleanup, BIN } = require('./server');
const { uid, client, connected, connectError, ack, once, closeAll } = require('./helpers');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-identity-'));
const SECRET = crypto.randomBytes(48).toString('base64');
const secretFile = path.join(dir, 'secret');
fs.writeFileSync(secretFile, SECRET + '\n');
const ISSUER = 'tidings-tests';
const AUDIENCE = 'chat';

/** Emits `event (...args, ack)` and resolves with the ack (bounded by a timeout). */
const emit = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** A token over `claims`, signed by hand: alg HS256 (key: a secret), RS256/ES256/EdDSA (key: a private KeyObject), or none. */
function sign(claims, { alg = 'HS256', key = SECRET, header = {} } = {}) {
  const message = `${b64({ alg, typ: 'JWT', ...header })}.${b64(claims)}`;
  let signature;
  if (alg === 'none') signature = Buffer.alloc(0);
  else if (alg === 'HS256') signature = crypto.createHmac('sha256', key).update(message).digest();
  else if (alg === 'RS256') signature = crypto.sign('sha256', Buffer.from(message), key);
  else if (alg === 'ES256') signature = crypto.sign('sha256', Buffer.from(message), { key, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'ES384') signature = crypto.sign('sha384', Buffer.from(message), { key, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'EdDSA') signature = crypto.sign(null, Buffer.from(message), key);
  else throw new Error(`no signer for ${alg}`);
  return `${message}.${signature.toString('base64url')}`;
}

/** Good claims for `sub`, valid for `ttl` seconds, with this server's issuer and audience. */
const claims = (sub, { ttl = 600, ...more } = {}) => ({ sub, exp: now() + ttl, iss: ISSUER, aud: AUDIENCE, ...more });

const STRICT = ['--auth', 'required', '--jwt-secret-file', secretFile, '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE];

afterEach(() => closeAll());
after(async () => {
  closeAll();
  await stopAll();
  cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--auth required: every refusal says why, and nothing is stored', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: [...STRICT, '--jwt-leeway', '0'] });
  });

  const refusals = [
    ['no token', () => undefined, /^token required$/],
    ['a token that is not a string', () => 42, /^invalid token: expected a string, got number$/],
    ['a bad signature', () => sign(claims('alice'), { key: 'not the secret, but as long as one' }), /^bad signature$/],
    ['alg none', () => sign(claims('alice'), { alg: 'none' }), /^algorithm not allowed: none/],
    ['an expired token', () => sign(claims('alice', { ttl: -5 })), /^token expired$/],
    ['a token not yet valid', () => sign(claims('alice', { nbf: now() + 600 })), /^token not yet valid$/],
    ['a token issued in the future', () => sign(claims('alice', { iat: now() + 600 })), /^token issued in the future$/],
    ['the wrong issuer', () => sign(claims('alice', { iss: 'someone else' })), /^wrong issuer$/],
    ['the wrong audience', () => sign(claims('alice', { aud: 'another app' })), /^wrong audience$/],
    ['no sub', () => sign({ exp: now() + 600, iss: ISSUER, aud: AUDIENCE }), /^missing sub$/],
    ['no exp', () => sign({ sub: 'alice', iss: ISSUER, aud: AUDIENCE }), /^missing exp$/],
    ['an oversized token', () => sign(claims('alice', { padding: 'x'.repeat(9000) })), /^token too large: \d+ bytes, the most is 8192$/],
    ['garbage', () => 'not.a.token', /^malformed token/],
  ];
  for (const [label, token, why] of refusals) {
    it(`refuses ${label}`, async () => {
      const t = token();
      const socket = client(srv.url, { auth: t === undefined ? {} : { token: t }, reconnection: false });
      const err = await connectError(socket);
      assert.match(err.message, why);
    });
  }

  it('counted every refusal, stored nothing, and a valid token still connects', async () => {
    const alice = client(srv.url, { auth: { token: sign(claims('alice')) } });
    await connected(alice);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(text, new RegExp(`tidings_rejected_total\\{reason="token"\\} ${refusals.length}\\b`), 'every refusal counted');
    assert.deepEqual(await emit(alice, 'history', { limit: 10 }), { messages: [], hasMore: false });
  });
});

describe('--auth required: verified authors', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: STRICT });
  });

  it('a message carries the token\'s user and name, whatever the client claims; renames are refused', async () => {
    const alice = client(srv.url, { auth: { token: sign(claims('u-alice', { name: 'Alice' })), nickname: 'Mallory' } });
    const presence = [];
    alice.on('presence', (p) => presence.push(p));
    const bob = client(srv.url, { auth: { token: sign(claims('u-bob')) } });
    await Promise.all([connected(alice), connected(bob)]);
    const content = uid('hello');
    const reply = await ack(alice, content, uid('o'), { author: 'Mallory' });
    assert.ok(Number.isSafeInteger(reply.id), JSON.stringify(reply));
    await bob.waitForContent(content);
    const meta = bob.metas.find((m) => m.id === reply.id);
    assert.equal(meta.author, 'Alice');
    assert.equal(meta.user, 'u-alice');
    // A token without a name is shown by its sub.
    const bobs = uid('from bob');
    const r2 = await ack(bob, bobs);
    await alice.waitForContent(bobs);
    assert.deepEqual(
      (({ author, user }) => ({ author, user }))(alice.metas.find((m) => m.id === r2.id)),
      { author: 'u-bob', user: 'u-bob' },
    );
    assert.deepEqual(await emit(alice, 'nickname', 'Mallory'), {
      error: 'nickname changes are refused: the name comes from your token',
    });
    // Presence lists the token's name, not the handshake's nickname.
    for (let i = 0; i < 60 && !presence.some((p) => p.users.includes('Alice')); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(presence.some((p) => p.users.includes('Alice')), JSON.stringify(presence));
    assert.ok(!presence.some((p) => p.users.includes('Mallory')), JSON.stringify(presence));
    // History shows the same verified fields.
    const page = await emit(alice, 'history', { limit: 10 });
    const entry = page.messages.find((m) => m.id === reply.id);
    assert.equal(entry.user, 'u-alice');
    assert.equal(entry.author, 'Alice');
  });

  it('two users\' messages with the same offset and content are two messages; a user\'s retry is a duplicate', async () => {
    const alice = client(srv.url, { auth: { token: sign(claims('dedup-alice')) } });
    const bob = client(srv.url, { auth: { token: sign(claims('dedup-bob')) } });
    await Promise.all([connected(alice), connected(bob)]);
    const [content, offset] = [uid('same'), uid('offset')];
    const a = await ack(alice, content, offset);
    const b = await ack(bob, content, offset);
    assert.notEqual(a.id, b.id, 'not collapsed into one');
    assert.equal(b.duplicate, undefined);
    const again = await ack(alice, content, offset);
    assert.deepEqual(again, { id: a.id, duplicate: true });
  });
});

describe('--auth required: a token that expires while connected', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: [...STRICT, '--jwt-leeway', '0', '--token-grace', '2'] });
  });

  it('without a refresh: "token expiring", sends refused while it still receives, then "token expired" and a disconnect', { timeout: 20000 }, async () => {
    const exp = now() + 2;
    const alice = client(srv.url, { auth: { token: sign({ ...claims('exp-alice'), exp }) }, reconnection: false });
    const other = client(srv.url, { auth: { token: sign(claims('exp-other')) } });
    await Promise.all([connected(alice), connected(other)]);
    const [expiring] = await once(alice, 'token expiring', 6000);
    assert.deepEqual(expiring, { exp, graceMs: 2000 });
    assert.deepEqual(await ack(alice, uid('late')), { error: 'token expired' });
    const meanwhile = uid('still received');
    await ack(other, meanwhile);
    await alice.waitForContent(meanwhile);
    const expired = once(alice, 'token expired', 5000);
    const [reason] = await once(alice, 'disconnect', 5000);
    assert.deepEqual((await expired)[0], { exp, error: 'token expired' });
    assert.equal(reason, 'io server disconnect');
    // Reconnecting with the expired token is refused.
    const again = client(srv.url, { auth: { token: sign({ ...claims('exp-alice'), exp }) }, reconnection: false });
    assert.match((await connectError(again)).message, /^token expired$/);
  });

  it('with a refresh within the grace: sends work again and the socket stays; another user\'s token is refused', { timeout: 20000 }, async () => {
    const alice = client(srv.url, { auth: { token: sign(claims('ref-alice', { ttl: 2 })) } });
    await connected(alice);
    await once(alice, 'token expiring', 6000);
    assert.deepEqual(await emit(alice, 'refresh token', sign(claims('ref-bob'))), { error: 'token is for another user' });
    assert.deepEqual(await emit(alice, 'refresh token', 'garbage'), { error: 'malformed token: expected three parts separated by dots' });
    assert.deepEqual(await emit(alice, 'refresh token', sign(claims('ref-alice', { ttl: 600 }))), { ok: true });
    const content = uid('after refresh');
    const reply = await ack(alice, content);
    assert.ok(Number.isSafeInteger(reply.id), JSON.stringify(reply));
    await new Promise((r) => setTimeout(r, 3000)); // past the grace
    assert.equal(alice.connected, true, 'not disconnected after a refresh');
  });
});

describe('--auth required: recovery never bypasses the token', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: STRICT });
  });

  it('a session is recovered by its user only', { timeout: 15000 }, async () => {
    const alice = client(srv.url, { auth: { token: sign(claims('rec-alice')) }, reconnection: false });
    await connected(alice);
    const content = uid('seen');
    const { id } = await ack(alice, content);
    await alice.waitForContent(content);
    const pid = alice._pid;
    assert.match(pid, /^[0-9a-f]{32}$/);
    // The connection drops (not a client's own disconnect, which ends its session).
    const gone = once(alice, 'disconnect');
    alice.io.engine.close();
    await gone;
    // What socket.io-client does with a session it holds: its pid and offset go in the CONNECT.
    const resuming = (token) => {
      const socket = client(srv.url, { auth: { token }, autoConnect: false });
      socket._pid = pid;
      socket._lastOffset = String(id);
      socket.connect();
      return socket;
    };
    // Bob presents Alice's session with his own valid token: connected, not recovered.
    const bob = resuming(sign(claims('rec-bob')));
    await connected(bob);
    assert.equal(bob.recovered, false, 'another user does not get Alice\'s session');
    assert.notEqual(bob._pid, pid);
    // Alice, with a token of hers, gets it back.
    const back = resuming(sign(claims('rec-alice')));
    await connected(back);
    assert.equal(back.recovered, true, 'its own user recovers it');
    assert.equal(back._pid, pid);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(text, /tidings_recoveries_total\{outcome="other_user"\} 1/);
  });
});

describe('--auth optional and off', () => {
  let optional;
  let off;
  before(async () => {
    optional = await start({ extraArgs: ['--auth', 'optional', '--jwt-secret-file', secretFile] });
    off = await start();
  });

  it('optional: no token is anonymous (user null, its own author); an invalid token is refused, not downgraded', async () => {
    const anon = client(optional.url);
    const alice = client(optional.url, { auth: { token: sign({ sub: 'opt-alice', exp: now() + 600 }) } });
    await Promise.all([connected(anon), connected(alice)]);
    const content = uid('anonymous');
    const { id } = await ack(anon, content, uid('o'), { author: 'Guest' });
    await alice.waitForContent(content);
    const meta = alice.metas.find((m) => m.id === id);
    assert.equal(meta.user, null);
    assert.equal(meta.author, 'Guest');
    const bad = client(optional.url, { auth: { token: sign({ sub: 'x', exp: now() + 600 }, { key: 'a wrong secret of thirty-two bytes!' }) }, reconnection: false });
    assert.match((await connectError(bad)).message, /^bad signature$/);
  });

  it('off: as the tutorial (user null), a token is ignored, refresh token answers an error', async () => {
    const socket = client(off.url, { auth: { token: 'anything at all' } });
    await connected(socket);
    const content = uid('off');
    const { id } = await ack(socket, content, uid('o'), { author: 'Ada' });
    await socket.waitForContent(content);
    const meta = socket.metas.find((m) => m.id === id);
    assert.deepEqual([meta.author, meta.user], ['Ada', null]);
    assert.deepEqual(await emit(socket, 'refresh token', 'x'), { error: 'authentication is off on this server' });
  });
});

describe('public keys: RS256, ES256, ES384, EdDSA (each the default for its key); algorithm confusion', () => {
  for (const [type, alg, options] of [
    ['rsa', 'RS256', { modulusLength: 2048 }],
    ['ec', 'ES256', { namedCurve: 'P-256' }],
    ['ec', 'ES384', { namedCurve: 'P-384' }],
    ['ed25519', 'EdDSA', {}],
  ]) {
    it(`${alg}: a token signed with the private key passes; an HS256 token "signed" with the public key does not`, { timeout: 20000 }, async () => {
      const { publicKey, privateKey } = crypto.generateKeyPairSync(type, options);
      const pem = publicKey.export({ type: 'spki', format: 'pem' });
      const keyFile = path.join(dir, `${alg}.pem`);
      fs.writeFileSync(keyFile, pem);
      const srv = await start({ extraArgs: ['--auth', 'required', '--jwt-public-key', keyFile] });
      const good = client(srv.url, { auth: { token: sign({ sub: 'pk', exp: now() + 60 }, { alg, key: privateKey }) } });
      await connected(good);
      const confused = client(srv.url, { auth: { token: sign({ sub: 'pk', exp: now() + 60 }, { alg: 'HS256', key: pem }) }, reconnection: false });
      assert.equal((await connectError(confused)).message, `algorithm not allowed: HS256 (this server accepts ${alg})`);
      await srv.stop();
    });
  }
});

describe('issuing tokens as README shows', () => {
  let srv;
  before(async () => {
    srv = await start({ extraArgs: STRICT });
  });

  it('Node (jsonwebtoken), Python (PyJWT) and `tidings token` make tokens the server accepts', { timeout: 20000 }, async () => {
    // README, "Issuing tokens", Node:
    const jwt = require('jsonwebtoken');
    const fromNode = jwt.sign({ sub: 'alice', name: 'Alice' }, SECRET, {
      algorithm: 'HS256', expiresIn: '1h', issuer: ISSUER, audience: AUDIENCE,
    });
    // README, "Issuing tokens", Python:
    const python = [
      'import jwt, os, sys, time',
      `secret = open(sys.argv[1]).read().rstrip("\\n")`,
      `print(jwt.encode({"sub": "bob", "name": "Bob", "exp": int(time.time()) + 3600, "iss": "${ISSUER}", "aud": "${AUDIENCE}"}, secret, algorithm="HS256"))`,
    ].join('\n');
    const py = spawnSync('python3', ['-c', python, secretFile], { encoding: 'utf8' });
    assert.equal(py.status, 0, `PyJWT: ${py.stderr}`);
    const cli = spawnSync(BIN, ['token', '--sub', 'carol', '--name', 'Carol', '--ttl', '600', '--jwt-secret-file', secretFile, '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE], { encoding: 'utf8' });
    assert.equal(cli.status, 0, cli.stderr);
    for (const [token, name] of [[fromNode, 'Alice'], [py.stdout.trim(), 'Bob'], [cli.stdout.trim(), 'Carol']]) {
      const socket = client(srv.url, { auth: { token } });
      await connected(socket);
      const content = uid(name);
      const { id } = await ack(socket, content);
      await socket.waitForContent(content);
      assert.equal(socket.metas.find((m) => m.id === id).author, name);
    }
  });
});

describe('start-up errors name the flag', () => {
  const shortFile = path.join(dir, 'short');
  fs.writeFileSync(shortFile, 'too short\n');
  const cases = [
    [['--auth', 'required'], /--auth: tokens need a key/],
    [['--jwt-secret-file', secretFile], /--jwt-secret-file: a key is set but --auth is off/],
    [['--auth', 'required', '--jwt-secret-file', shortFile], /the secret is 9 bytes long, it must be at least 32/],
    [['--auth', 'required', '--jwt-secret-file', path.join(dir, 'missing')], /--jwt-secret-file: cannot read/],
    [['--auth', 'required', '--jwt-secret-file', secretFile, '--jwt-algorithm', 'RS256'], /algorithm RS256 cannot be used with an HMAC secret/],
    [['--auth', 'required', '--jwt-public-key', secretFile], /--jwt-public-key: .*not a PEM public key/],
    [['--auth', 'sometimes'], /invalid value 'sometimes' for '--auth/],
    [['--jwt-leeway', '3601'], /--jwt-leeway/],
    [['--token-grace', '0'], /--token-grace/],
  ];
  for (const [args, why] of cases) {
    it(`refuses ${args.join(' ')}`, () => {
      const db = path.join(dir, `never-${crypto.randomUUID()}.redb`);
      const run = spawnSync(BIN, ['--host', '127.0.0.1', '--port', '0', '--db', db, ...args], { encoding: 'utf8', timeout: 10000 });
      assert.notEqual(run.status, 0, 'it must not start');
      assert.match(run.stderr, why);
    });
  }
});
