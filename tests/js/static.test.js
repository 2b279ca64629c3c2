'use strict';
// The chat page and the vendored client bundle are served byte for byte from static/.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { start, stopAll, cleanup } = require('./server');

const STATIC = path.resolve(__dirname, '../../static');

const routes = [
  ['/', 'index.html', /^text\/html/],
  ['/app.js', 'app.js', /javascript/],
  ['/style.css', 'style.css', /text\/css/],
  ['/socket.io/socket.io.js', 'socket.io.js', /javascript/],
  ['/socket.io/socket.io.min.js', 'socket.io.min.js', /javascript/],
  ['/socket.io/socket.io.min.js.map', 'socket.io.min.js.map', null],
  ['/socket.io/socket.io.js.map', 'socket.io.js.map', null],
];

describe('static assets', () => {
  let srv;
  before(async () => {
    srv = await start();
  });
  after(async () => {
    await stopAll();
    cleanup();
  });

  for (const [route, file, type] of routes) {
    it(`GET ${route} serves static/${file}`, { timeout: 10000 }, async () => {
      const res = await fetch(srv.url + route, { signal: AbortSignal.timeout(5000) });
      assert.equal(res.status, 200);
      if (type) assert.match(res.headers.get('content-type') || '', type);
      const body = Buffer.from(await res.arrayBuffer());
      assert.ok(body.equals(fs.readFileSync(path.join(STATIC, file))), `body of ${route} differs from static/${file}`);
    });
  }
});
