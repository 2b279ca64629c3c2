'use strict';
// static/app.js (the chat page's script) run against a small fake DOM, a fake io() and a fake
// clock: no server, no browser (tests/browser runs the page in a real Chromium). Checks the
// page's logic: what it sends and when, what it shows for each server event, and that message
// text only ever goes into the page as text. Also checks static/index.html and style.css.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const nodeCrypto = require('node:crypto');

const STATIC = path.resolve(__dirname, '../../static');
const APP = fs.readFileSync(path.join(STATIC, 'app.js'), 'utf8');
const PAGE = fs.readFileSync(path.join(STATIC, 'index.html'), 'utf8');
const IDS = [...PAGE.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);

// ---- a fake DOM: just what app.js uses ---------------------------------------------------

function classList(node) {
  const set = () => new Set(node.className.split(/\s+/).filter(Boolean));
  const write = (s) => {
    node.className = [...s].join(' ');
  };
  return {
    add: (...c) => write(new Set([...set(), ...c])),
    remove: (...c) => {
      const s = set();
      for (const x of c) s.delete(x);
      write(s);
    },
    toggle: (c, force) => {
      const s = set();
      const on = force === undefined ? !s.has(c) : !!force;
      if (on) s.add(c);
      else s.delete(c);
      write(s);
      return on;
    },
    contains: (c) => set().has(c),
  };
}

function element(tag, id) {
  const listeners = {};
  const node = {
    tag,
    id,
    parent: null,
    children: [],
    attributes: {},
    className: '',
    hidden: false,
    disabled: false,
    value: '',
    _text: '',
    scrollTop: 500,
    scrollHeight: 1000,
    clientHeight: 500,
    focused: false,
    get textContent() {
      return this.children.length ? this.children.map((c) => c.textContent).join('') : this._text;
    },
    set textContent(v) {
      for (const c of this.children) c.parent = null;
      this.children = [];
      this._text = String(v);
    },
    set innerHTML(_) {
      throw new Error('app.js must not use innerHTML');
    },
    set outerHTML(_) {
      throw new Error('app.js must not use outerHTML');
    },
    insertAdjacentHTML() {
      throw new Error('app.js must not use insertAdjacentHTML');
    },
    get firstChild() {
      return this.children[0] || null;
    },
    get lastChild() {
      return this.children[this.children.length - 1] || null;
    },
    setAttribute(k, v) {
      if (/^on/i.test(k)) throw new Error(`app.js must not set event handler attributes (${k})`);
      if (k === 'style') throw new Error('app.js must not set style attributes (CSP style-src)');
      this.attributes[k] = String(v);
    },
    getAttribute(k) {
      return k in this.attributes ? this.attributes[k] : null;
    },
    addEventListener(type, fn) {
      (listeners[type] ||= []).push(fn);
    },
    dispatch(type, props = {}) {
      const event = { type, target: node, defaultPrevented: false, preventDefault() { this.defaultPrevented = true; }, ...props };
      for (const fn of listeners[type] || []) fn(event);
      return event;
    },
    appendChild(child) {
      if (child.parent) child.remove();
      child.parent = this;
      this.children.push(child);
      return child;
    },
    insertBefore(child, ref) {
      if (child.parent) child.remove();
      const i = this.children.indexOf(ref);
      if (i < 0) throw new Error('insertBefore: reference is not a child');
      child.parent = this;
      this.children.splice(i, 0, child);
      return child;
    },
    remove() {
      if (!this.parent) return;
      const siblings = this.parent.children;
      siblings.splice(siblings.indexOf(this), 1);
      this.parent = null;
    },
    replaceChildren(...nodes) {
      for (const c of this.children) c.parent = null;
      this.children = [];
      for (const n of nodes) this.appendChild(n);
    },
    focus() {
      node.ownerFocus(node);
    },
    ownerFocus() {},
    /** Descendants (depth first) matching a predicate. */
    find(pred) {
      const out = [];
      const walk = (n) => {
        for (const c of n.children) {
          if (pred(c)) out.push(c);
          walk(c);
        }
      };
      walk(this);
      return out;
    },
    byClass(c) {
      return this.find((n) => n.classList.contains(c));
    },
  };
  node.classList = classList(node);
  return node;
}

/** A clock for setTimeout / Date.now that only moves when the test says so. */
function fakeClock(start = Date.UTC(2030, 5, 15, 9, 30)) {
  let now = start;
  let seq = 0;
  const timers = new Map();
  const clock = {
    get now() {
      return now;
    },
    setTimeout(fn, ms = 0) {
      const id = ++seq;
      timers.set(id, { at: now + Math.max(0, Number(ms) || 0), fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** Moves time forward, running each timer that falls due, in order. */
    tick(ms) {
      const end = now + ms;
      for (;;) {
        let next = null;
        for (const [id, t] of timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
        if (!next) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].fn();
      }
      now = end;
    },
  };
  return clock;
}

function fakeSocket() {
  const socket = {
    id: undefined, // as while offline: the page must not build offsets from it
    connected: false,
    active: true,
    handlers: {},
    managerHandlers: {},
    emitted: [],
    volatileEmitted: [],
    on(event, fn) {
      (this.handlers[event] ||= []).push(fn);
      return this;
    },
    emit(...args) {
      this.emitted.push(args);
      return this;
    },
    get volatile() {
      return { emit: (...args) => socket.volatileEmitted.push(args) };
    },
    connect() {
      this.active = true;
      return this;
    },
    disconnect() {
      this.active = false;
      this.connected = false;
      this.fire('disconnect', 'io client disconnect');
      return this;
    },
    fire(event, ...args) {
      for (const fn of this.handlers[event] || []) fn(...args);
    },
    /** The server accepted the connection. */
    up() {
      this.connected = true;
      this.active = true;
      this.id = 'sid';
      this.fire('connect');
    },
    /** The connection dropped (the client reconnects by itself). */
    down(reason = 'transport close') {
      this.connected = false;
      this.id = undefined;
      this.fire('disconnect', reason);
    },
    receive(...args) {
      this.fire('chat message', ...args);
    },
    /** The emits of one event, in order. */
    sent(event) {
      return this.emitted.filter((e) => e[0] === event);
    },
  };
  socket.io = {
    on(event, fn) {
      (socket.managerHandlers[event] ||= []).push(fn);
    },
    fire(event, ...args) {
      for (const fn of socket.managerHandlers[event] || []) fn(...args);
    },
  };
  return socket;
}

/**
 * Runs app.js once against a fresh fake page. `crypto` is what the page sees as
 * globalThis.crypto; `stored` is localStorage's content; `connect` makes the server accept.
 */
function load({ crypto = nodeCrypto.webcrypto, stored = {}, connect = true } = {}) {
  const clock = fakeClock();
  const elements = {};
  let active = null;
  const focus = (n) => {
    active = n;
  };
  for (const id of IDS) {
    elements[id] = element(id === 'messages' || id === 'outbox' || id === 'people' || id === 'notices' ? 'ul' : 'div', id);
    elements[id].ownerFocus = focus;
  }
  // the scroller: 20px per message, 500px tall, scrollTop clamped like a browser's
  const scroller = elements.scroller;
  let top = 0;
  Object.defineProperty(scroller, 'scrollHeight', {
    get: () => Math.max(500, 20 * (elements.messages.children.length + elements.outbox.children.length)),
  });
  Object.defineProperty(scroller, 'scrollTop', {
    get: () => top,
    set: (v) => {
      top = Math.max(0, Math.min(Number(v) || 0, scroller.scrollHeight - scroller.clientHeight));
    },
  });
  // what index.html hides at first
  for (const id of IDS) if (new RegExp(`id="${id}"[^>]*\\shidden[\\s>]`).test(PAGE)) elements[id].hidden = true;
  const storage = { ...stored };
  const localStorage = {
    getItem: (k) => (k in storage ? storage[k] : null),
    setItem: (k, v) => {
      storage[k] = String(v);
    },
  };
  const socket = fakeSocket();
  const calls = [];
  const windowListeners = {};
  const documentListeners = {};
  const body = element('body');
  class FakeDate extends Date {
    constructor(...args) {
      if (args.length) super(...args);
      else super(clock.now);
    }
    static now() {
      return clock.now;
    }
  }
  const sandbox = {
    io: (...args) => {
      calls.push(args);
      socket.auth = args.at(-1).auth;
      return socket;
    },
    document: {
      title: 'tidings',
      hidden: false,
      body,
      getElementById: (id) => elements[id] ?? null,
      createElement: (tag) => {
        const e = element(tag);
        e.ownerFocus = focus;
        return e;
      },
      addEventListener: (type, fn) => (documentListeners[type] ||= []).push(fn),
    },
    navigator: { onLine: true },
    localStorage,
    crypto,
    Date: FakeDate,
    setTimeout: (fn, ms) => clock.setTimeout(fn, ms),
    clearTimeout: (id) => clock.clearTimeout(id),
    addEventListener: (type, fn) => (windowListeners[type] ||= []).push(fn),
  };
  sandbox.window = sandbox;
  sandbox.globalThis = sandbox;
  vm.runInNewContext(APP, sandbox, { filename: 'static/app.js' });
  if (connect) socket.up();

  const $ = (id) => elements[id];
  const page = {
    socket,
    calls,
    clock,
    storage,
    $,
    active: () => active,
    /** Types `text` in the message box and submits the form, like pressing Enter. */
    send(text) {
      $('input').value = text;
      $('input').dispatch('input');
      return $('form').dispatch('submit');
    },
    /** The chat messages sent, as [content, clientOffset, meta?] (the ack callback left out). */
    chats: () => socket.sent('chat message').map((e) => e.slice(1).filter((a) => typeof a !== 'function')),
    /** Acks the n-th `chat message` emit (0-based) with (err, res), as socket.io would. */
    ack(n, res, err = null) {
      const e = socket.sent('chat message')[n];
      e[e.length - 1](err, res);
    },
    /** The messages shown: [{ id, text, author, time, mine, cont }]. */
    shown: () =>
      $('messages').children.map((li) => ({
        id: Number(li.getAttribute('data-id')),
        text: li.byClass('msg-text')[0].textContent,
        author: li.byClass('author')[0].textContent,
        time: (li.find((n) => n.tag === 'time')[0] || { textContent: null }).textContent,
        mine: li.classList.contains('mine'),
        cont: li.classList.contains('cont'),
      })),
    /** The pending messages: [{ text, state, failed, buttons }]. */
    pending: () =>
      $('outbox').children.map((li) => ({
        text: li.byClass('msg-text')[0].textContent,
        state: li.byClass('msg-state')[0].textContent,
        failed: li.classList.contains('failed'),
        buttons: li.find((n) => n.tag === 'button'),
      })),
    status: () => ({ state: $('status').getAttribute('data-state'), text: $('status-text').textContent }),
  };
  return page;
}

const plain = (v) => JSON.parse(JSON.stringify(v));

// ---- the tests --------------------------------------------------------------------------

describe('static/app.js: connecting', () => {
  it('connects with auth { serverOffset: 0, latest: 50 }, ackTimeout 10000, retries 3', () => {
    const { calls } = load();
    assert.equal(calls.length, 1);
    assert.deepEqual(plain(calls[0].at(-1)), { auth: { serverOffset: 0, latest: 50 }, ackTimeout: 10000, retries: 3 });
  });

  it('adds the remembered nickname to auth; ignores an unusable stored one', () => {
    assert.equal(load({ stored: { 'tidings.nickname': 'Ada' } }).socket.auth.nickname, 'Ada');
    assert.equal(load({ stored: { 'tidings.nickname': 'x'.repeat(33) } }).socket.auth.nickname, undefined);
    assert.equal(load({ stored: { 'tidings.nickname': '   ' } }).socket.auth.nickname, undefined);
  });

  it('asks for a name on a first visit only', () => {
    const first = load();
    assert.equal(first.$('nick-form').hidden, false);
    assert.equal(first.active(), first.$('nick-input'));
    const again = load({ stored: { 'tidings.nickname': 'Ada' } });
    assert.equal(again.$('nick-form').hidden, true);
    assert.equal(again.active(), again.$('input'));
    assert.equal(again.$('nick-btn').textContent, 'Ada');
  });
});

describe('static/app.js: sending', () => {
  it('sends (content, clientOffset, { author }) with unique offsets not built from socket.id', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    assert.equal(page.send('hello').defaultPrevented, true);
    assert.equal(page.$('input').value, '', 'the box is cleared');
    page.ack(0, { id: 1 });
    page.send('hello');
    page.ack(1, { id: 2 });
    page.send('world');
    const chats = page.chats();
    assert.equal(chats.length, 3);
    for (const [content, offset, meta] of chats) {
      assert.equal(typeof content, 'string');
      assert.equal(typeof offset, 'string');
      assert.ok(offset.length >= 16, `offset ${offset} is long enough to be unique`);
      assert.ok(!offset.includes('undefined') && !offset.includes('sid'), `offset ${offset} is not built from socket.id`);
      assert.deepEqual(plain(meta), { author: 'Ada' });
    }
    assert.equal(new Set(chats.map((c) => c[1])).size, 3, 'every message has its own offset');
    assert.deepEqual(chats.map((c) => c[0]), ['hello', 'hello', 'world']);
    // the ack callback is last, as socket.io-client expects
    assert.equal(typeof page.socket.sent('chat message')[0].at(-1), 'function');
  });

  it('without a name: (content, clientOffset) only, like the tutorial', () => {
    const page = load();
    page.send('hi');
    assert.deepEqual(page.chats(), [['hi', page.chats()[0][1]]]);
  });

  it('does not send an empty or blank message', () => {
    const page = load();
    page.send('');
    page.send('   ');
    assert.equal(page.chats().length, 0);
  });

  it('offsets differ between two pages, also without crypto.randomUUID or crypto at all', () => {
    for (const crypto of [nodeCrypto.webcrypto, { getRandomValues: (a) => nodeCrypto.webcrypto.getRandomValues(a) }, undefined]) {
      const a = load({ crypto });
      const b = load({ crypto });
      a.send('one');
      a.ack(0, { id: 1 });
      a.send('two');
      b.send('one');
      const offsets = [...a.chats(), ...b.chats()].map((e) => e[1]);
      assert.equal(new Set(offsets).size, 3, `unique offsets: ${offsets}`);
      for (const o of offsets) assert.ok(typeof o === 'string' && o.length >= 16, `offset ${o}`);
    }
  });

  it('shows a message as pending until its ack, then as confirmed, once', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.send('hello');
    assert.deepEqual(page.pending().map((p) => [p.text, p.state]), [['hello', 'Sending…']]);
    assert.equal(page.shown().length, 0);
    // the server emits the sender's copy before the ack: the pending copy goes away at once
    page.socket.receive('hello', 1, { author: 'Ada', time: page.clock.now });
    assert.deepEqual(page.pending(), []);
    assert.deepEqual(page.shown().map((m) => [m.id, m.text, m.author, m.mine]), [[1, 'hello', 'Ada', true]]);
    page.ack(0, { id: 1 });
    assert.deepEqual(page.pending(), []);
    assert.equal(page.shown().length, 1);
  });

  it('an ack { id, duplicate: true } (a retry of a stored message) confirms it too', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.send('again');
    page.socket.receive('again', 4, { author: 'Ada', time: page.clock.now }); // replayed on reconnect
    page.ack(0, { id: 4, duplicate: true });
    assert.deepEqual(page.pending(), []);
    assert.deepEqual(page.shown().map((m) => m.id), [4]);
  });

  it('a message already shown, replayed again, does not take the place of a pending one', () => {
    const page = load();
    page.socket.receive('same words', 1, { author: null, time: 1 });
    page.send('same words');
    page.socket.receive('same words', 1, { author: null, time: 1 }); // a replay of id 1
    assert.equal(page.pending().length, 1, 'still pending');
    page.socket.receive('same words', 2, { author: null, time: 1 }); // its own copy
    assert.equal(page.pending().length, 0);
    assert.deepEqual(page.shown().map((m) => [m.id, m.mine]), [[1, false], [2, true]]);
  });

  it('hands socket.io one message at a time, in the order typed', () => {
    const page = load();
    page.send('a');
    page.send('b');
    page.send('c');
    assert.deepEqual(page.chats().map((c) => c[0]), ['a']);
    assert.deepEqual(page.pending().map((p) => p.state), ['Sending…', 'Queued', 'Queued']);
    page.socket.receive('a', 1, { author: null, time: 1 });
    page.ack(0, { id: 1 });
    assert.deepEqual(page.chats().map((c) => c[0]), ['a', 'b']);
    page.socket.receive('b', 2, { author: null, time: 1 });
    page.ack(1, { id: 2 });
    assert.deepEqual(page.chats().map((c) => c[0]), ['a', 'b', 'c']);
  });

  it('typed while offline: queued, shown as waiting, sent when connected', () => {
    const page = load({ connect: false });
    page.send('later');
    assert.match(page.pending()[0].state, /Waiting for the connection/);
    assert.match(page.status().text, /· 1 unsent$/);
    // socket.io holds the emit until connected (retries); the page shows it as sending then
    page.socket.up();
    assert.equal(page.pending()[0].state, 'Sending…');
    assert.equal(page.status().text, 'Connected');
  });

  it('an error ack: failed, with the reason; Retry re-sends with the same clientOffset; Discard drops it', () => {
    const page = load();
    page.send('x'.repeat(10));
    page.ack(0, { error: 'content is 70000 bytes, the limit is 65536' });
    let [p] = page.pending();
    assert.equal(p.failed, true);
    assert.equal(p.state, 'Not sent: content is 70000 bytes, the limit is 65536');
    assert.deepEqual(p.buttons.map((b) => b.textContent), ['Retry', 'Discard']);
    // later messages are not held up by a failed one
    page.send('next');
    assert.deepEqual(page.chats().map((c) => c[0]), ['x'.repeat(10), 'next']);
    page.socket.receive('next', 1, { author: null, time: 1 });
    page.ack(1, { id: 1 });

    p.buttons[0].dispatch('click');
    assert.equal(page.chats().length, 3);
    assert.equal(page.chats()[2][1], page.chats()[0][1], 'a retry keeps its clientOffset');
    assert.equal(page.active(), page.$('input'), 'focus back in the message box');
    page.ack(2, { error: 'still no' });
    [p] = page.pending();
    assert.equal(p.state, 'Not sent: still no');
    p.buttons[1].dispatch('click');
    assert.deepEqual(page.pending(), []);
  });

  it('no answer at all (socket.io gave up retrying): failed, can be retried', () => {
    const page = load();
    page.send('lost');
    page.ack(0, undefined, new Error('operation has timed out'));
    const [p] = page.pending();
    assert.equal(p.failed, true);
    assert.match(p.state, /did not answer/);
  });

  it('rate limited: held back for retryAfterMs, then sent again (same offset), the rest after it', () => {
    const page = load();
    page.send('one');
    page.send('two');
    page.ack(0, { error: 'rate limited', retryAfterMs: 1500 });
    assert.deepEqual(page.pending().map((p) => [p.state, p.failed]), [
      ['Slow down — sending again in 2 s', false],
      ['Queued', false],
    ]);
    assert.equal(page.chats().length, 1, 'nothing else is sent meanwhile');
    page.clock.tick(1000);
    assert.equal(page.pending()[0].state, 'Slow down — sending again in 1 s', 'the countdown ticks');
    assert.equal(page.chats().length, 1);
    page.clock.tick(500);
    assert.equal(page.chats().length, 2);
    assert.deepEqual(page.chats()[1], page.chats()[0], 'the same message and offset again');
    page.socket.receive('one', 1, { author: null, time: 1 });
    page.ack(1, { id: 1 });
    assert.deepEqual(page.chats().map((c) => c[0]), ['one', 'one', 'two']);
  });
});

describe('static/app.js: receiving', () => {
  it('renders each id once and in id order; tracks auth.serverOffset; drops auth.latest', () => {
    const page = load();
    const { socket } = page;
    socket.receive('a', 1);
    socket.receive('b', 2);
    socket.receive('b', 2); // duplicate
    socket.receive('old', 1); // replayed again
    socket.receive('not an id', '7');
    socket.receive('no id');
    socket.receive('negative', -3);
    socket.receive('d', 5);
    socket.receive('c', 4); // late: goes in its place
    assert.deepEqual(page.shown().map((m) => [m.id, m.text]), [
      [1, 'a'],
      [2, 'b'],
      [4, 'c'],
      [5, 'd'],
    ]);
    assert.equal(socket.auth.serverOffset, 5);
    assert.equal('latest' in socket.auth, false, 'a reconnect replays everything after the offset');
  });

  it('renders text, never HTML, and shows author and time', () => {
    const page = load();
    const evil = '<img src=x onerror="alert(1)"><b>bold</b>';
    page.socket.receive(evil, 1, { author: '<i>Eve</i>', time: page.clock.now });
    page.socket.receive('anon', 2, { author: null, time: page.clock.now - 86400000 * 3 });
    page.socket.receive('tutorial server', 3);
    const [a, b, c] = page.shown();
    assert.equal(a.text, evil);
    assert.equal(a.author, '<i>Eve</i>');
    assert.match(a.time, /^\d\d:\d\d$/, 'today: the time only');
    assert.equal(b.author, 'anonymous');
    assert.match(b.time, /^\d{1,2} [A-Z][a-z]{2} \d\d:\d\d$/, `another day: the date too (${b.time})`);
    assert.equal(c.time, null, 'no time when the server sends none');
    assert.ok(page.$('messages').children[0].textContent.includes(evil), 'the li contains the content');
  });

  it('groups consecutive messages of one author', () => {
    const page = load();
    const t = page.clock.now;
    page.socket.receive('1', 1, { author: 'Ada', time: t });
    page.socket.receive('2', 2, { author: 'Ada', time: t + 1000 });
    page.socket.receive('3', 3, { author: 'Bob', time: t + 2000 });
    page.socket.receive('4', 4, { author: 'Bob', time: t + 20 * 60 * 1000 });
    assert.deepEqual(page.shown().map((m) => m.cont), [false, true, false, false]);
  });

  it('marks messages by the same name as mine', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.socket.receive('from another tab', 1, { author: 'Ada', time: 1 });
    page.socket.receive('from Bob', 2, { author: 'Bob', time: 1 });
    assert.deepEqual(page.shown().map((m) => m.mine), [true, false]);
  });
});

describe('static/app.js: sync and epochs', () => {
  it('remembers the epoch of `sync` and sends it back when reconnecting', () => {
    const page = load();
    page.socket.receive('a', 1, { author: null, time: 1 });
    page.socket.fire('sync', { epoch: '00c0ffee00c0ffee', from: 1, to: 1, complete: true });
    assert.equal(page.socket.auth.epoch, '00c0ffee00c0ffee');
    assert.deepEqual(page.$('notices').children, []);
    page.socket.down();
    page.socket.up();
    page.socket.fire('sync', { epoch: '00c0ffee00c0ffee', from: 2, to: 1, complete: true });
    assert.deepEqual(page.shown().map((m) => m.id), [1], 'same database: nothing changes');
  });

  it('another database (a new epoch): clears the page and replays the latest messages from 0', () => {
    const page = load();
    page.socket.receive('old a', 7, { author: null, time: 1 });
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 7, complete: true });
    page.socket.down();
    page.socket.up();
    page.socket.fire('sync', { epoch: 'bbbb', from: 1, to: 0, complete: false });
    assert.deepEqual(page.shown(), []);
    assert.deepEqual(plain(page.socket.auth), { serverOffset: 0, latest: 50, epoch: 'bbbb' });
    assert.equal(page.socket.active, true, 'reconnecting');
    page.socket.up();
    page.socket.receive('new a', 1, { author: null, time: 1 });
    assert.deepEqual(page.shown().map((m) => [m.id, m.text]), [[1, 'new a']]);
    assert.match(page.$('notices').children.map((n) => n.textContent).join(), /reset/);
  });

  it('complete: false (messages deleted while away) is told to the user', () => {
    const page = load();
    page.socket.fire('sync', { epoch: 'aaaa', from: 40, to: 50, complete: false });
    assert.match(page.$('notices').children.map((n) => n.textContent).join(), /no longer available/);
  });
});

describe('static/app.js: older history', () => {
  it('near the top, asks for the page before the oldest shown and puts it above, in order', () => {
    const page = load();
    for (let id = 71; id <= 120; id++) page.socket.receive(`m${id}`, id, { author: null, time: 1 });
    page.socket.fire('sync', { epoch: 'aaaa', from: 71, to: 120, complete: true });
    page.clock.tick(200);
    assert.equal(page.socket.sent('history').length, 0, 'not while the reader is at the bottom of a full page');
    const scroller = page.$('scroller');
    scroller.scrollTop = 0;
    scroller.dispatch('scroll');
    scroller.dispatch('scroll');
    const requests = page.socket.sent('history');
    assert.equal(requests.length, 1, 'one request at a time');
    assert.deepEqual(plain(requests[0][1]), { before: 71, limit: 50 });
    const ack = requests[0].at(-1);
    const older = [];
    for (let id = 21; id <= 71; id++) older.push({ id, content: `m${id}`, author: 'Ada', time: 1 }); // 71 overlaps
    ack(null, { messages: older, hasMore: true });
    // 50 more messages (1000px) went in above: the reader still sees message 71 at the top
    assert.equal(scroller.scrollTop, 1000, 'the view stays on what the reader was looking at');
    const ids = page.shown().map((m) => m.id);
    assert.deepEqual(ids, Array.from({ length: 100 }, (_, i) => 21 + i));
    assert.equal(page.socket.auth.serverOffset, 120, 'history does not move the reconnect offset');

    scroller.scrollTop = 0;
    scroller.dispatch('scroll');
    const second = page.socket.sent('history')[1];
    assert.deepEqual(plain(second[1]), { before: 21, limit: 50 });
    second.at(-1)(null, { messages: [{ id: 20, content: 'm20', author: null, time: 1 }], hasMore: false });
    assert.equal(page.$('history-note').hidden, false);
    assert.match(page.$('history-note').textContent, /beginning of the conversation/);
    assert.equal(page.$('older-btn').hidden, true);
    scroller.dispatch('scroll');
    assert.equal(page.socket.sent('history').length, 2, 'nothing more to ask for');
  });

  it('the "Load older messages" button does the same; an error is shown', () => {
    const page = load();
    page.socket.receive('m5', 5, { author: null, time: 1 });
    assert.equal(page.$('older-btn').hidden, false);
    page.$('older-btn').dispatch('click');
    const [req] = page.socket.sent('history');
    assert.deepEqual(plain(req[1]), { before: 5, limit: 50 });
    req.at(-1)(null, { error: 'boom' });
    assert.match(page.$('history-note').textContent, /Could not load older messages: boom/);
  });

  it('a short page loads older messages by itself, but only once the replay is over (sync)', () => {
    const page = load();
    const history = () => page.socket.sent('history');
    // five replayed messages (100px of a 500px scroller), then the replay pauses
    for (let id = 96; id <= 100; id++) page.socket.receive(`m${id}`, id, { author: null, time: 1 });
    page.clock.tick(1000);
    assert.equal(history().length, 0, 'not while the replay may still be arriving');
    page.socket.fire('sync', { epoch: 'aaaa', from: 96, to: 100, complete: true });
    page.clock.tick(200);
    assert.equal(history().length, 1, 'the replay is over and the page is short: fill it');
    assert.deepEqual(plain(history()[0][1]), { before: 96, limit: 50 });
    // one older message, more exist: the page is still short, so it would go on filling...
    history()[0].at(-1)(null, { messages: [{ id: 95, content: 'm95', author: null, time: 1 }], hasMore: true });
    // ...but the connection drops and comes back first: its replay comes before any filling
    page.socket.down();
    page.socket.up();
    page.socket.receive('m101', 101, { author: null, time: 1 });
    page.clock.tick(1000);
    assert.equal(history().length, 1, 'nothing asked during the second replay');
    page.socket.fire('sync', { epoch: 'aaaa', from: 101, to: 101, complete: true });
    page.clock.tick(200);
    assert.equal(history().length, 2);
    assert.deepEqual(plain(history()[1][1]), { before: 95, limit: 50 });
  });

  it('the replay scrolling to the bottom as it first fills the page loads nothing older', () => {
    const page = load();
    const history = () => page.socket.sent('history');
    const scroller = page.$('scroller');
    // 26 replayed messages: 520px in a 500px scroller, kept at the bottom: scrollTop 20, near
    // the top, and the browser fires a scroll event for it (a busy machine makes the replay
    // pause right there)
    for (let id = 75; id <= 100; id++) page.socket.receive(`m${id}`, id, { author: null, time: 1 });
    assert.equal(scroller.scrollTop, 20, 'kept at the bottom');
    scroller.dispatch('scroll');
    page.clock.tick(1000);
    assert.equal(history().length, 0, 'not during the replay');
    // the rest of the replay, then its end: the page is full and at the bottom, nothing to load
    for (let id = 101; id <= 124; id++) page.socket.receive(`m${id}`, id, { author: null, time: 1 });
    page.socket.fire('sync', { epoch: 'aaaa', from: 75, to: 124, complete: true });
    page.clock.tick(200);
    assert.equal(history().length, 0, 'the latest 50, nothing older');
    // a reader who scrolls up after the replay gets the older page
    scroller.scrollTop = 0;
    scroller.dispatch('scroll');
    assert.equal(history().length, 1);
    assert.deepEqual(plain(history()[0][1]), { before: 75, limit: 50 });
  });

  it('never asks for history when it starts at id 1', () => {
    const page = load();
    page.socket.receive('first', 1, { author: null, time: 1 });
    page.$('scroller').scrollTop = 0;
    page.$('scroller').dispatch('scroll');
    page.clock.tick(500);
    assert.equal(page.socket.sent('history').length, 0);
    assert.equal(page.$('history-note').hidden, false);
  });
});

describe('static/app.js: connection status', () => {
  it('connecting, connected, reconnecting (attempt n), offline', () => {
    const page = load({ connect: false });
    assert.deepEqual(page.status(), { state: 'connecting', text: 'Connecting…' });
    page.socket.up();
    assert.deepEqual(page.status(), { state: 'connected', text: 'Connected' });
    page.socket.down();
    assert.deepEqual(page.status(), { state: 'reconnecting', text: 'Reconnecting…' });
    page.socket.io.fire('reconnect_attempt', 3);
    assert.deepEqual(page.status(), { state: 'reconnecting', text: 'Reconnecting (attempt 3)…' });
    page.socket.up();
    assert.deepEqual(page.status(), { state: 'connected', text: 'Connected' });
    // the Disconnect button
    assert.equal(page.$('toggle-btn').textContent, 'Disconnect');
    page.$('toggle-btn').dispatch('click');
    assert.deepEqual(page.status(), { state: 'offline', text: 'Offline' });
    assert.equal(page.$('toggle-btn').textContent, 'Connect');
    page.$('toggle-btn').dispatch('click');
    assert.equal(page.socket.active, true);
    page.socket.up();
    assert.equal(page.$('toggle-btn').textContent, 'Disconnect');
  });

  it('a refused connection is shown with the server\'s reason; a bad name opens the name form', () => {
    const page = load({ connect: false, stored: { 'tidings.nickname': 'Ada' } });
    page.socket.active = false;
    page.socket.fire('connect_error', new Error('invalid nickname: too long'));
    assert.deepEqual(page.status(), { state: 'offline', text: 'Offline: invalid nickname: too long' });
    assert.equal(page.$('nick-form').hidden, false);
    assert.equal(page.$('nick-error').textContent, 'invalid nickname: too long');
  });

  it('a transport error while reconnecting keeps "reconnecting"', () => {
    const page = load();
    page.socket.down();
    page.socket.fire('connect_error', new Error('xhr poll error'));
    assert.equal(page.status().state, 'reconnecting');
  });
});

describe('static/app.js: names, presence, typing', () => {
  it('picking a name: checked, sent with `nickname`, remembered on { ok: true }', () => {
    const page = load();
    page.$('nick-input').value = 'x'.repeat(33);
    page.$('nick-form').dispatch('submit');
    assert.match(page.$('nick-error').textContent, /at most 32 characters/);
    assert.equal(page.socket.sent('nickname').length, 0);

    page.$('nick-input').value = '  Ada  ';
    page.$('nick-form').dispatch('submit');
    const [req] = page.socket.sent('nickname');
    assert.equal(req[1], 'Ada');
    req.at(-1)(null, { error: 'nickname taken?' });
    assert.equal(page.$('nick-error').textContent, 'nickname taken?');
    assert.equal(page.storage['tidings.nickname'], undefined);

    page.socket.fire('presence', { count: 2, users: ['Bob'] });
    page.$('nick-form').dispatch('submit');
    page.socket.sent('nickname')[1].at(-1)(null, { ok: true });
    assert.deepEqual(page.$('people').children.map((li) => li.textContent), ['AAda(you)', 'BBob'], 'listed at once');
    assert.equal(page.storage['tidings.nickname'], 'Ada');
    assert.equal(page.socket.auth.nickname, 'Ada', 'used when reconnecting');
    assert.equal(page.$('nick-btn').textContent, 'Ada');
    assert.equal(page.$('nick-form').hidden, true);
  });

  it('picking a name while offline: applied locally, used on the next connect', () => {
    const page = load({ connect: false });
    page.$('nick-input').value = 'Bob';
    page.$('nick-form').dispatch('submit');
    assert.equal(page.socket.sent('nickname').length, 0);
    assert.equal(page.socket.auth.nickname, 'Bob');
    assert.equal(page.storage['tidings.nickname'], 'Bob');
  });

  /** A presence tick with news, as the server coalesces it. */
  const news = (users, { joined = [], left = [], joinedCount, leftCount } = {}) => ({
    count: users.length,
    users,
    joined,
    joinedCount: joinedCount ?? joined.length,
    left,
    leftCount: leftCount ?? left.length,
  });

  it('who is online, with count; joined / left / renamed notices that go away', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.socket.fire('presence', { count: 3, users: ['Ada', 'Bob'] });
    assert.equal(page.$('online-count').textContent, '3');
    assert.deepEqual(page.$('people').children.map((li) => li.textContent), ['AAda(you)', 'BBob']);
    assert.match(page.$('people-note').textContent, /1 more without a name/);
    page.socket.fire('presence', news(['Ada', 'Bob'], { joined: ['Ada', 'Bob'] }));
    page.socket.fire('user renamed', { from: 'Bob', to: 'Robert' });
    page.socket.fire('presence', news(['Ada'], { left: ['Robert'] }));
    assert.deepEqual(page.$('notices').children.map((li) => li.textContent), ['Bob joined', 'Bob is now Robert', 'Robert left']);
    page.clock.tick(10000);
    assert.deepEqual(page.$('notices').children, []);
  });

  it('many joins in one tick make one notice; news right after reconnecting makes none', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    const crowd = ['Bob', 'Cy', 'Dee', 'Eve'];
    page.socket.down();
    page.socket.up();
    page.socket.fire('presence', news(['Ada', ...crowd], { joined: ['Ada', ...crowd] }));
    assert.deepEqual(page.$('notices').children, [], 'everyone reconnected with this page');
    page.clock.tick(6000);
    page.socket.fire('presence', news(['Ada', ...crowd], { joined: crowd, joinedCount: 250 }));
    assert.deepEqual(page.$('notices').children.map((li) => li.textContent), ['Bob, Cy and 248 others joined']);
  });

  it('the same notice is not shown twice (everyone rejoins after a server restart)', () => {
    const page = load();
    page.socket.fire('presence', news(['Bob'], { joined: ['Bob'] }));
    page.clock.tick(4000);
    page.socket.fire('presence', news(['Bob'], { joined: ['Bob'] }));
    assert.deepEqual(page.$('notices').children.map((li) => li.textContent), ['Bob joined']);
    page.clock.tick(6000);
    assert.equal(page.$('notices').children.length, 1, 'its time starts again');
    page.clock.tick(3000);
    assert.equal(page.$('notices').children.length, 0);
  });

  it('while disconnected the online list is marked as possibly out of date', () => {
    const page = load();
    page.socket.fire('presence', { count: 2, users: ['Ada', 'Bob'] });
    page.socket.down();
    assert.equal(page.$('sidebar').classList.contains('stale'), true);
    assert.match(page.$('people-note').textContent, /out of date/);
    page.socket.up();
    assert.equal(page.$('sidebar').classList.contains('stale'), false);
  });

  it('"X is typing…" for others, cleared by typing:false, their message, leaving, or time', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    const typing = (nickname, on) => page.socket.fire('typing', { nickname, typing: on });
    typing('Bob', true);
    assert.equal(page.$('typing').textContent, 'Bob is typing…');
    typing('Cy', true);
    assert.equal(page.$('typing').textContent, 'Bob and Cy are typing…');
    typing('Ada', true); // never yourself
    typing('Bob', false);
    assert.equal(page.$('typing').textContent, 'Cy is typing…');
    page.socket.receive('hi', 1, { author: 'Cy', time: 1 });
    assert.equal(page.$('typing').textContent, '');
    typing('Dee', true);
    page.socket.fire('presence', news(['Ada'], { left: ['Dee'] }));
    assert.equal(page.$('typing').textContent, '');
    typing('Eve', true);
    page.clock.tick(7000);
    assert.equal(page.$('typing').textContent, '', 'forgotten if not refreshed');
  });

  it('announces its own typing (volatile, a few times a second at most) and its end', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    const input = page.$('input');
    for (const v of ['h', 'he', 'hel']) {
      input.value = v;
      input.dispatch('input');
    }
    assert.deepEqual(plain(page.socket.volatileEmitted), [['typing', true]]);
    assert.equal(page.socket.sent('typing').length, 0, 'never through the retry queue');
    page.clock.tick(3500);
    assert.deepEqual(plain(page.socket.volatileEmitted), [['typing', true], ['typing', false]], 'idle: stopped');
    input.value = 'hello';
    input.dispatch('input');
    page.$('form').dispatch('submit');
    assert.deepEqual(plain(page.socket.volatileEmitted).slice(2), [['typing', true], ['typing', false]], 'sent: stopped');

    const anon = load();
    anon.$('input').value = 'x';
    anon.$('input').dispatch('input');
    assert.deepEqual(anon.socket.volatileEmitted, [], 'no typing events without a name');
  });
});

describe('static/index.html and style.css', () => {
  it('keeps the tutorial skeleton: form#form, input#input, ul#messages', () => {
    assert.match(PAGE, /<form id="form" action="">/);
    assert.match(PAGE, /<input id="input" autocomplete="off"/);
    assert.match(PAGE, /<ul id="messages"><\/ul>/);
    assert.match(PAGE, /<button id="toggle-btn"/);
    for (const id of ['status', 'scroller', 'outbox', 'people', 'typing', 'notices', 'nick-form', 'older-btn']) {
      assert.ok(IDS.includes(id), `#${id}`);
    }
    assert.equal(new Set(IDS).size, IDS.length, 'ids are unique');
    const used = [...APP.matchAll(/\$\('([^']+)'\)/g)].map((m) => m[1]);
    assert.ok(used.length > 20);
    for (const id of used) assert.ok(IDS.includes(id), `app.js uses #${id}: it is on the page`);
  });

  it("works under the CSP: no inline script, style or event handler; /socket.io/socket.io.js then /app.js", () => {
    for (const [tag] of PAGE.matchAll(/<script\b[^>]*>/g)) assert.match(tag, /\bsrc="\//, tag);
    assert.doesNotMatch(PAGE, /<script\b[^>]*>[^<\s]/, 'no script body');
    assert.doesNotMatch(PAGE, /\son[a-z]+\s*=/i, 'no on* attributes');
    assert.doesNotMatch(PAGE, /<style\b/i, 'no <style>');
    assert.doesNotMatch(PAGE, /\sstyle\s*=/i, 'no style attributes');
    assert.match(PAGE, /<link rel="stylesheet" href="\/style\.css">/);
    assert.match(PAGE, /<script src="\/socket\.io\/socket\.io\.js"><\/script>\s*<script src="\/app\.js" defer><\/script>/);
    assert.doesNotMatch(APP, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
  });

  it('has a stylesheet with focus styles, a phone layout and reduced motion', () => {
    const css = fs.readFileSync(path.join(STATIC, 'style.css'), 'utf8');
    assert.match(css, /:focus-visible/);
    assert.match(css, /@media \(max-width: 52rem\)/);
    assert.match(css, /prefers-reduced-motion/);
    assert.match(css, /prefers-color-scheme: dark/);
  });
});
