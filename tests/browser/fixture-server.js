'use strict';
// Tutorial pages (fixtures with inline scripts, which our server's CSP rightly blocks, and that
// connect with io() to their own origin) served by a tiny local server, byte for byte, at `/`;
// everything else (socket.io.js, long-polling, the WebSocket upgrade) passes through to tidings
// untouched: the page talks to our server exactly as if our server had served it.
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const B = require('./browser');

/** The bytes of tests/fixtures/NAME. */
function fixture(name) {
  return fs.readFileSync(path.resolve(__dirname, '../fixtures', name));
}

/** Serves `html` at / and forwards every other request, upgrades included, to `port`. */
function passThrough(port, html) {
  const open = new Set();
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', (e) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`tidings unreachable: ${e.message}`);
    });
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
  });
  server.on('upgrade', (req, socket, head) => {
    const upstream = net.connect(port, '127.0.0.1', () => {
      let raw = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(`${raw}\r\n`);
      if (head && head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    open.add(upstream);
    upstream.on('close', () => open.delete(upstream));
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        close: () =>
          new Promise((done) => {
            for (const s of open) s.destroy();
            server.close(() => done());
          }),
      }),
    );
  });
}

/** A fresh browser context on a fixture page at `url`, connected (`socket` is its global). */
async function openFixture(browser, url) {
  const page = await B.newPage(browser, { viewport: { width: 700, height: 520 } });
  await page.goto(`${url}/`, { waitUntil: 'load' });
  await B.until(page, () => typeof socket !== 'undefined' && socket.connected, null, 'the page to connect');
  return page;
}

module.exports = { fixture, passThrough, openFixture };
