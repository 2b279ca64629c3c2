'use strict';
// static/app.js (the chat page's script) run against a stub DOM and a stub io(): no server,
// no browser. Checks the step-8 logic and the fixes over the tutorial's page.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const nodeCrypto = require('node:crypto');

const APP = fs.readFileSync(path.resolve(__dirname, '../../static/app.js'), 'utf8');

function element(tag) {
  const listeners = {};
  return {
    tag,
    children: [],
    value: '',
    textContent: '',
    set innerHTML(_) {
      throw new Error('app.js must not use innerHTML');
    },
    addEventListener(type, fn) {
      (listeners[type] ||= []).push(fn);
    },
    dispatch(type) {
      const event = { type, defaultPrevented: false, preventDefault() { this.defaultPrevented = true; } };
      for (const fn of listeners[type] || []) fn(event);
      return event;
    },
    appendChild(child) {
      this.children.push(child);
      return child;
    },
  };
}

/** Runs app.js once; `crypto` is what the page sees as globalThis.crypto. */
function load({ crypto = nodeCrypto.webcrypto } = {}) {
  const elements = {
    form: element('form'),
    input: element('input'),
    messages: element('ul'),
    'toggle-btn': element('button'),
  };
  const socket = {
    id: undefined, // as while offline: the page must not build offsets from it
    connected: true,
    handlers: {},
    emitted: [],
    on(event, fn) {
      this.handlers[event] = fn;
      return this;
    },
    emit(...args) {
      this.emitted.push(args);
      return this;
    },
    connect() {
      this.connected = true;
    },
    disconnect() {
      this.connected = false;
    },
    receive(...args) {
      this.handlers['chat message'](...args);
    },
  };
  const calls = [];
  const sandbox = {
    io: (...args) => {
      calls.push(args);
      socket.auth = args.at(-1).auth;
      return socket;
    },
    document: {
      getElementById: (id) => elements[id] ?? null,
      createElement: (tag) => element(tag),
      body: { scrollHeight: 0 },
    },
    crypto,
    Math,
    Date,
    Number,
    String,
    Array,
    Uint8Array,
  };
  sandbox.window = sandbox;
  sandbox.window.scrollTo = () => {};
  sandbox.globalThis = sandbox;
  vm.runInNewContext(APP, sandbox, { filename: 'static/app.js' });
  const send = (text) => {
    elements.input.value = text;
    return elements.form.dispatch('submit');
  };
  const rendered = () => elements.messages.children.map((li) => li.textContent);
  return { socket, calls, elements, send, rendered };
}

describe('static/app.js', () => {
  it('connects like the step-8 page: auth.serverOffset 0, ackTimeout 10000, retries 3', () => {
    const { calls } = load();
    assert.equal(calls.length, 1);
    const opts = calls[0].at(-1);
    assert.deepEqual(JSON.parse(JSON.stringify(opts)), { auth: { serverOffset: 0 }, ackTimeout: 10000, retries: 3 });
  });

  it('sends (content, clientOffset) with unique offsets not built from socket.id; clears the input', () => {
    const { socket, send, elements } = load();
    assert.equal(send('hello').defaultPrevented, true);
    send('hello');
    send('world');
    assert.equal(elements.input.value, '');
    assert.equal(socket.emitted.length, 3);
    const offsets = socket.emitted.map(([event, content, offset]) => {
      assert.equal(event, 'chat message');
      assert.equal(typeof content, 'string');
      assert.equal(typeof offset, 'string');
      assert.ok(offset.length >= 16, `offset ${offset} is long enough to be unique`);
      assert.ok(!offset.includes('undefined'), `offset ${offset} is not built from socket.id`);
      return offset;
    });
    assert.equal(new Set(offsets).size, 3, 'every message has its own offset');
    assert.deepEqual(socket.emitted.map((e) => e[1]), ['hello', 'hello', 'world']);
  });

  it('does not send an empty input', () => {
    const { socket, send } = load();
    send('');
    assert.equal(socket.emitted.length, 0);
  });

  it('offsets differ between two pages (two page loads)', () => {
    const a = load();
    const b = load();
    a.send('x');
    b.send('x');
    assert.notEqual(a.socket.emitted[0][2], b.socket.emitted[0][2]);
  });

  it('works without crypto.randomUUID (plain http origin) and without crypto at all', () => {
    for (const crypto of [{ getRandomValues: (a) => nodeCrypto.webcrypto.getRandomValues(a) }, undefined]) {
      const a = load({ crypto });
      const b = load({ crypto });
      a.send('one');
      a.send('two');
      b.send('one');
      const offsets = [...a.socket.emitted, ...b.socket.emitted].map((e) => e[2]);
      assert.equal(new Set(offsets).size, 3, `unique offsets: ${offsets}`);
      for (const o of offsets) assert.ok(typeof o === 'string' && o.length >= 16, `offset ${o}`);
    }
  });

  it('renders each id once, skips ids <= the last rendered, tracks auth.serverOffset', () => {
    const { socket, rendered } = load();
    socket.receive('a', 1);
    socket.receive('b', 2);
    socket.receive('b', 2); // duplicate
    socket.receive('old', 1); // replayed again
    socket.receive('not an id', '7');
    socket.receive('no id');
    socket.receive('d', 5);
    socket.receive('c', 4); // late
    assert.deepEqual(rendered(), ['a', 'b', 'd']);
    assert.equal(socket.auth.serverOffset, 5);
  });

  it('renders text, never HTML', () => {
    const { socket, elements } = load();
    const evil = '<img src=x onerror="alert(1)"><b>bold</b>';
    socket.receive(evil, 1);
    assert.equal(elements.messages.children[0].tag, 'li');
    assert.equal(elements.messages.children[0].textContent, evil);
  });

  it('the toggle button disconnects and reconnects', () => {
    const { socket, elements } = load();
    elements['toggle-btn'].dispatch('click');
    assert.equal(socket.connected, false);
    assert.equal(elements['toggle-btn'].textContent, 'Connect');
    elements['toggle-btn'].dispatch('click');
    assert.equal(socket.connected, true);
    assert.equal(elements['toggle-btn'].textContent, 'Disconnect');
  });
});

describe('static/index.html', () => {
  const page = fs.readFileSync(path.resolve(__dirname, '../../static/index.html'), 'utf8');
  const tutorial = fs.readFileSync(path.resolve(__dirname, '../fixtures/tutorial-index.html'), 'utf8');

  it('is the tutorial page with its inline script replaced by /app.js', () => {
    const withoutInline = tutorial.replace(/ *<script>[\s\S]*?<\/script>\n/, '    <script src="/app.js" defer></script>\n');
    assert.notEqual(withoutInline, tutorial, 'the fixture has an inline script');
    assert.equal(page, withoutInline);
  });

  it("has no inline script or inline event handler (CSP script-src 'self')", () => {
    for (const [tag] of page.matchAll(/<script\b[^>]*>/g)) assert.match(tag, /\bsrc="\//, tag);
    assert.doesNotMatch(page, /<script\b[^>]*>[^<\s]/, 'no script body');
    assert.doesNotMatch(page, /\son[a-z]+\s*=/i, 'no on* attributes');
    assert.match(page, /<script src="\/socket\.io\/socket\.io\.js"><\/script>\s*<script src="\/app\.js" defer><\/script>/);
  });
});
