'use strict';
// contrib/nginx.conf in front of tidings (Debian's nginx, started here with a self-signed
// certificate made with openssl): the official client over wss:// and over https://
// long-polling through it, and tidings seeing the client's address through X-Forwarded-For
// (--trusted-proxies). Without nginx the file fails in CI and is skipped, saying why, elsewhere.
const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const { start, stopAll, cleanup } = require('./server');
const { uid, client, connected, connectError, ack, closeAll } = require('./helpers');

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p));
const skip = !NGINX && !process.env.CI ? 'nginx is not installed (apt-get install nginx)' : false;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-nginx-'));
let nginx;

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** Resolves once `port` accepts connections (bounded: 10 s). */
async function accepting(port) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

afterEach(() => closeAll());
after(async () => {
  closeAll();
  if (nginx && nginx.exitCode === null) nginx.kill('SIGKILL');
  await stopAll();
  cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('behind nginx (contrib/nginx.conf)', { skip }, () => {
  let url;
  let pem;
  before(async () => {
    assert.ok(NGINX, 'nginx is not installed: CI installs it (apt-get install nginx)');
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=tidings behind nginx',
      '-addext', 'subjectAltName=IP:127.0.0.1',
    ], { stdio: 'ignore' });
    pem = fs.readFileSync(cert, 'utf8');
    const srv = await start({ extraArgs: ['--trusted-proxies', '127.0.0.1', '--max-connections-per-ip', '1'] });
    const port = await freePort();
    // contrib/nginx.conf as a user installs it, with this test's ports and files.
    const site = fs
      .readFileSync(path.join(__dirname, '../../contrib/nginx.conf'), 'utf8')
      .replace('server 127.0.0.1:3000;', `server 127.0.0.1:${srv.port};`)
      .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
      .replace('listen [::]:443 ssl;', '')
      .replace(/ssl_certificate\s+\S+;/, `ssl_certificate ${cert};`)
      .replace(/ssl_certificate_key\s+\S+;/, `ssl_certificate_key ${key};`);
    assert.ok(site.includes(`127.0.0.1:${port} ssl`) && site.includes(cert), 'the placeholders are where the test expects them');
    fs.writeFileSync(path.join(dir, 'site.conf'), site);
    const temp = (name) => `${name} ${path.join(dir, name.replace(/_path$/, ''))};`;
    fs.writeFileSync(path.join(dir, 'nginx.conf'), [
      'daemon off;',
      'master_process off;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      'error_log stderr warn;',
      'events { worker_connections 256; }',
      'http {',
      '  access_log off;',
      `  ${temp('client_body_temp_path')} ${temp('proxy_temp_path')} ${temp('fastcgi_temp_path')}`,
      `  ${temp('uwsgi_temp_path')} ${temp('scgi_temp_path')}`,
      `  include ${path.join(dir, 'site.conf')};`,
      '}',
    ].join('\n'));
    nginx = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'inherit', 'inherit'] });
    await accepting(port);
    url = `https://127.0.0.1:${port}`;
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`the official client chats through it over ${transports[0] === 'websocket' ? 'wss://' : 'https:// long-polling'}`, async () => {
      const a = client(url, { transports, ca: pem, extraHeaders: { 'X-Forwarded-For': '203.0.113.1' } });
      const b = client(url, { transports, ca: pem, extraHeaders: { 'X-Forwarded-For': '203.0.113.2' } });
      await Promise.all([connected(a), connected(b)]);
      const content = uid(`through nginx ${transports[0]}`);
      const { id } = await ack(a, content, uid('o'));
      assert.ok(Number.isSafeInteger(id));
      await b.waitForContent(content);
    });
  }

  it('tidings counts the addresses nginx forwards (--trusted-proxies), one connection each here', async () => {
    const first = client(url, { ca: pem, extraHeaders: { 'X-Forwarded-For': '198.51.100.1' } });
    await connected(first);
    const second = client(url, { ca: pem, extraHeaders: { 'X-Forwarded-For': '198.51.100.1' }, reconnection: false });
    assert.match((await connectError(second)).message, /too many connections from your address/);
    const other = client(url, { ca: pem, extraHeaders: { 'X-Forwarded-For': '198.51.100.2' } });
    await connected(other);
  });
});
