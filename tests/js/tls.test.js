'use strict';
// TLS in the binary (--tls-cert, --tls-key): the official client over wss:// and https://
// long-polling, verifying the server's certificate (a self-signed one made here with the
// openssl command, for 127.0.0.1); SIGHUP serves a renewed certificate to new connections while
// connected clients keep their sockets, a bad new pair keeps the old one; a missing, unreadable
// or mismatched pair stops the start with one line naming the flag.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { execFileSync } = require('node:child_process');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, ack, closeAll } = require('./helpers');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-tls-'));

/** A self-signed EC certificate for 127.0.0.1 in `name`.crt / `name`.key; returns the paths. */
function selfSigned(name) {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=tidings test ${name}`,
    '-addext', 'subjectAltName=IP:127.0.0.1',
  ], { stdio: 'ignore' });
  return { cert, key, pem: fs.readFileSync(cert, 'utf8') };
}

/** The SHA-256 fingerprint of the certificate a new TLS connection to `port` is served. */
function servedFingerprint(port) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.end();
      resolve(fingerprint);
    });
    socket.on('error', reject);
    socket.setTimeout(5000, () => socket.destroy(new Error('no TLS handshake')));
  });
}

const fingerprint = (pem) => new crypto.X509Certificate(pem).fingerprint256;

afterEach(() => closeAll());
after(async () => {
  closeAll();
  await stopAll();
  cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--tls-cert and --tls-key', () => {
  let srv;
  let first;
  const live = { cert: path.join(dir, 'live.crt'), key: path.join(dir, 'live.key') };
  before(async () => {
    first = selfSigned('first');
    fs.copyFileSync(first.cert, live.cert);
    fs.copyFileSync(first.key, live.key);
    srv = await start({ extraArgs: ['--tls-cert', live.cert, '--tls-key', live.key] });
  });

  it('prints an https:// ready line and serves the page over https', async () => {
    assert.match(srv.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(await servedFingerprint(srv.port), fingerprint(first.pem));
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`the official client connects over ${transports[0] === 'websocket' ? 'wss://' : 'https:// polling'}, verifying the certificate`, async () => {
      const socket = client(srv.url, { transports, ca: first.pem });
      await connected(socket);
      const content = uid('over tls');
      const { id } = await ack(socket, content, uid('o'));
      assert.ok(Number.isSafeInteger(id));
      await socket.waitForContent(content);
    });
  }

  it('refuses a client that does not trust the certificate', async () => {
    const socket = client(srv.url, { reconnection: false });
    await assert.rejects(connected(socket), /connect_error/);
  });

  it('SIGHUP serves a renewed certificate to new connections; connected clients keep their sockets; a bad pair keeps the old one', async () => {
    const socket = client(srv.url, { ca: first.pem });
    await connected(socket);
    const second = selfSigned('second');
    fs.copyFileSync(second.cert, live.cert);
    fs.copyFileSync(second.key, live.key);
    srv.proc.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    while ((await servedFingerprint(srv.port)) !== fingerprint(second.pem)) {
      assert.ok(Date.now() < deadline, 'the renewed certificate is not served');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(socket.connected, 'the connected client kept its socket');
    const content = uid('after the renewal');
    await ack(socket, content, uid('o'));
    await socket.waitForContent(content);
    const renewed = client(srv.url, { ca: second.pem });
    await connected(renewed);
    // A bad pair (the first key with the second certificate) changes nothing.
    fs.copyFileSync(first.key, live.key);
    srv.proc.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await servedFingerprint(srv.port), fingerprint(second.pem));
    assert.equal(srv.proc.exitCode, null, 'still running');
  });
});

describe('a pair that cannot be used stops the start, naming the flag', () => {
  it('missing, not PEM, mismatched, or only one of the two flags', async () => {
    const a = selfSigned('a');
    const b = selfSigned('b');
    const garbage = path.join(dir, 'garbage.pem');
    fs.writeFileSync(garbage, 'not a certificate\n');
    const cases = [
      [['--tls-cert', path.join(dir, 'missing.crt'), '--tls-key', a.key], /--tls-cert .*missing\.crt: cannot read it/],
      [['--tls-cert', garbage, '--tls-key', a.key], /--tls-cert .*garbage\.pem: no PEM certificate in it/],
      [['--tls-cert', a.cert, '--tls-key', garbage], /--tls-key .*garbage\.pem: no PEM private key in it/],
      [['--tls-cert', a.cert, '--tls-key', b.key], /--tls-key .*b\.key is not the key of --tls-cert .*a\.crt/],
      [['--tls-cert', a.cert], /--tls-key/],
    ];
    for (const [args, why] of cases) {
      await assert.rejects(start({ extraArgs: args }), why, args.join(' '));
    }
  });
});
