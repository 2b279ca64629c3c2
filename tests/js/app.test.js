'use strict';
// static/app.js (the chat page's script) run against a small fake DOM, a fake io() and a fake
// clock: no server, no browser (tests/browser runs the page in a real Chromium). Checks the
// page's logic: what it sends and when, what it shows for each server event, and that message
// text only ever goes into the page as text. Also checks static/index.html and style.css.
//
// The fake DOM is a tree parsed from static/index.html (the page's real structure: parents,
// siblings, the ids app.js moves from list to list), with just the DOM API app.js uses. What it
// does not implement throws (an unknown selector, innerHTML) instead of answering something.
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

const plain = (v) => JSON.parse(JSON.stringify(v));

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

/** A compound selector (`a.room-link`, `.first-unread`, `[aria-current="page"]`) as a predicate. */
function matcher(selector) {
  const m = /^([a-z][a-z0-9]*)?((?:[.#][\w-]+|\[[\w-]+(?:="[^"]*")?\])*)$/.exec(selector);
  if (!m || selector === '') throw new Error(`the fake DOM does not support the selector ${JSON.stringify(selector)}`);
  const tests = [];
  if (m[1]) tests.push((n) => n.tag === m[1]);
  for (const [part] of m[2].matchAll(/[.#][\w-]+|\[[^\]]+\]/g)) {
    if (part[0] === '.') tests.push((n) => n.classList.contains(part.slice(1)));
    else if (part[0] === '#') tests.push((n) => n.id === part.slice(1));
    else {
      const [, name, value] = /^\[([\w-]+)(?:="([^"]*)")?\]$/.exec(part);
      tests.push((n) => (value === undefined ? n.getAttribute(name) !== null : n.getAttribute(name) === value));
    }
  }
  return (n) => tests.every((t) => t(n));
}

const NO_BUBBLE = new Set(['scroll', 'blur', 'focus']);

function textNode(data) {
  return {
    nodeType: 3,
    data: String(data),
    parentNode: null,
    get textContent() {
      return this.data;
    },
    remove() {
      if (this.parentNode) this.parentNode.childNodes.splice(this.parentNode.childNodes.indexOf(this), 1);
      this.parentNode = null;
    },
  };
}

function element(doc, tag) {
  const listeners = {};
  const attrs = {};
  const node = {
    nodeType: 1,
    tag,
    ownerDocument: doc,
    parentNode: null,
    childNodes: [],
    disabled: false,
    value: '',
    scrollTop: 0,
    scrollHeight: 0,
    clientHeight: 0,
    get id() {
      return attrs.id ?? '';
    },
    set id(v) {
      attrs.id = String(v);
    },
    get className() {
      return attrs.class ?? '';
    },
    set className(v) {
      attrs.class = String(v);
    },
    get hidden() {
      return 'hidden' in attrs;
    },
    set hidden(v) {
      if (v) attrs.hidden = '';
      else delete attrs.hidden;
    },
    get attributes() {
      return attrs;
    },
    get children() {
      return this.childNodes.filter((c) => c.nodeType === 1);
    },
    get parentElement() {
      return this.parentNode && this.parentNode.nodeType === 1 ? this.parentNode : null;
    },
    get firstChild() {
      return this.childNodes[0] || null;
    },
    get lastChild() {
      return this.childNodes[this.childNodes.length - 1] || null;
    },
    get firstElementChild() {
      return this.children[0] || null;
    },
    get lastElementChild() {
      return this.children.at(-1) || null;
    },
    get nextElementSibling() {
      if (!this.parentNode) return null;
      const siblings = this.parentNode.children;
      return siblings[siblings.indexOf(this) + 1] || null;
    },
    get previousElementSibling() {
      if (!this.parentNode) return null;
      const siblings = this.parentNode.children;
      return siblings[siblings.indexOf(this) - 1] || null;
    },
    get isConnected() {
      let n = this;
      while (n.parentNode) n = n.parentNode;
      return n === doc;
    },
    get textContent() {
      return this.childNodes.map((c) => c.textContent).join('');
    },
    set textContent(v) {
      this.replaceChildren();
      if (String(v) !== '') this.appendChild(textNode(v));
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
    setAttribute(k, v) {
      if (/^on/i.test(k)) throw new Error(`app.js must not set event handler attributes (${k})`);
      if (k === 'style') throw new Error('app.js must not set style attributes (CSP style-src)');
      attrs[k] = String(v);
    },
    getAttribute(k) {
      return k in attrs ? attrs[k] : null;
    },
    removeAttribute(k) {
      delete attrs[k];
    },
    addEventListener(type, fn) {
      (listeners[type] ||= []).push(fn);
    },
    /** Fires an event at this element; it bubbles up to the document (but scroll, blur, focus). */
    dispatch(type, props = {}) {
      let stopped = false;
      const event = {
        type,
        target: node,
        defaultPrevented: false,
        preventDefault() {
          this.defaultPrevented = true;
        },
        stopPropagation() {
          stopped = true;
        },
        ...props,
      };
      for (let n = node; n && !stopped; n = NO_BUBBLE.has(type) ? null : n.parentNode) {
        for (const fn of n.listenersOf(type)) fn.call(n, event);
      }
      return event;
    },
    listenersOf(type) {
      return listeners[type] || [];
    },
    appendChild(child) {
      return this.insertBefore(child, null);
    },
    insertBefore(child, ref) {
      if (ref !== null && ref.parentNode !== this) throw new Error('insertBefore: reference is not a child');
      if (child.contains && child.contains(this)) throw new Error('insertBefore: a node cannot go inside itself');
      child.remove();
      child.parentNode = this;
      if (ref === null) this.childNodes.push(child);
      else this.childNodes.splice(this.childNodes.indexOf(ref), 0, child);
      return child;
    },
    remove() {
      if (!this.parentNode) return;
      const siblings = this.parentNode.childNodes;
      siblings.splice(siblings.indexOf(this), 1);
      this.parentNode = null;
    },
    replaceWith(other) {
      const parent = this.parentNode;
      if (!parent) return;
      if (other === this) return;
      other.remove();
      parent.childNodes[parent.childNodes.indexOf(this)] = other;
      other.parentNode = parent;
      this.parentNode = null;
    },
    replaceChildren(...nodes) {
      for (const c of this.childNodes) c.parentNode = null;
      this.childNodes = [];
      for (const n of nodes) this.appendChild(n);
    },
    contains(other) {
      for (let n = other; n; n = n.parentNode) if (n === this) return true;
      return false;
    },
    closest(selector) {
      const match = matcher(selector);
      for (let n = this; n && n.nodeType === 1; n = n.parentNode) if (match(n)) return n;
      return null;
    },
    querySelector(selector) {
      return this.find(matcher(selector))[0] || null;
    },
    getBoundingClientRect() {
      return doc.layout(this);
    },
    focus() {
      doc.focus(this);
    },
    get dataset() {
      const attr = (k) => `data-${String(k).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      return new Proxy(
        {},
        {
          get: (_, k) => (typeof k === 'string' && attr(k) in attrs ? attrs[attr(k)] : undefined),
          set: (_, k, v) => {
            attrs[attr(k)] = String(v);
            return true;
          },
        },
      );
    },
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

const VOID = new Set(['meta', 'link', 'input', 'br', 'img', 'hr']);
const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" };
const decode = (s) =>
  s.replace(/&(amp|lt|gt|quot|#39);/g, (_, e) => ENTITIES[e]).replace(/&[#\w]+;/g, (e) => {
    throw new Error(`index.html: the fake DOM does not decode ${e}`);
  });

/** The document of index.html: its elements in their tree, text included. */
function fakeDocument() {
  const listeners = {};
  const doc = {
    nodeType: 9,
    parentNode: null,
    childNodes: [],
    title: 'tidings',
    hidden: false,
    activeElement: null,
    layout: () => ({ top: 0, bottom: 0, left: 0, right: 0, width: 0, height: 0 }),
    get documentElement() {
      return this.childNodes[0];
    },
    get body() {
      return this.documentElement.find((n) => n.tag === 'body')[0];
    },
    getElementById(id) {
      return this.documentElement.find((n) => n.id === id)[0] || null;
    },
    createElement: (tag) => element(doc, String(tag).toLowerCase()),
    addEventListener: (type, fn) => (listeners[type] ||= []).push(fn),
    listenersOf: (type) => listeners[type] || [],
    focus(n) {
      const old = doc.activeElement;
      if (old === n) return;
      doc.activeElement = n;
      if (old) old.dispatch('blur');
      n.dispatch('focus');
    },
  };
  const stack = [doc];
  const tokens = /<!--[\s\S]*?-->|<!DOCTYPE[^>]*>|<\/([a-z0-9]+)\s*>|<([a-z0-9]+)((?:\s+[^\s=>/]+(?:="[^"]*")?)*)\s*\/?>|[^<]+/gi;
  for (const m of PAGE.matchAll(tokens)) {
    const top = stack.at(-1);
    if (m[0].startsWith('<!')) continue;
    if (m[1]) {
      if (top.tag !== m[1].toLowerCase()) throw new Error(`index.html: </${m[1]}> closes <${top.tag}>`);
      stack.pop();
    } else if (m[2]) {
      const e = element(doc, m[2].toLowerCase());
      for (const [, k, v] of m[3].matchAll(/([^\s=]+)(?:="([^"]*)")?/g)) e.attributes[k] = decode(v ?? '');
      top.childNodes.push(e);
      e.parentNode = top;
      if (!VOID.has(e.tag)) stack.push(e);
    } else if (top !== doc) {
      const t = textNode(decode(m[0]));
      top.childNodes.push(t);
      t.parentNode = top;
    }
  }
  if (stack.length !== 1) throw new Error(`index.html: <${stack.at(-1).tag}> is not closed`);
  for (const e of doc.documentElement.find((n) => n.tag === 'input')) e.value = e.getAttribute('value') ?? '';
  return doc;
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

/**
 * A fake socket.io-client socket. `up()` is the server accepting the connection: as the tidings
 * server does, it then sends the socket the presence of each room it is in (`auth.rooms`, or
 * the default room when the page names none), with no news.
 */
function fakeSocket({ defaultRoom = 'general' } = {}) {
  const socket = {
    id: undefined, // as while offline: the page must not build offsets from it
    connected: false,
    active: true,
    handlers: {},
    managerHandlers: {},
    emitted: [],
    volatileEmitted: [],
    defaultRoom,
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
    /** The server accepted the connection (and sends each of the socket's rooms' presence). */
    up({ presence = true, users } = {}) {
      this.connected = true;
      this.active = true;
      this.id = 'sid';
      this.fire('connect');
      if (!presence) return;
      const listed = users || (this.auth && this.auth.nickname ? [this.auth.nickname] : []);
      for (const room of (this.auth && this.auth.rooms) || [defaultRoom]) {
        this.fire('presence', { room, count: listed.length || 1, users: listed, joined: [], joinedCount: 0, left: [], leftCount: 0 });
      }
    },
    /** The connection dropped (the client reconnects by itself). */
    down(reason = 'transport close') {
      this.connected = false;
      this.id = undefined;
      this.fire('disconnect', reason);
    },
    /** A `chat message` from the server: (content, id, meta), as tidings sends it (or a tutorial server: no meta). */
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
 * globalThis.crypto; `stored` is localStorage's content; `hash` the URL's; `connect` makes the
 * server accept (and send the presence of the page's rooms).
 */
function load({ crypto = nodeCrypto.webcrypto, stored = {}, connect = true, hash = '', defaultRoom = 'general' } = {}) {
  const clock = fakeClock();
  const doc = fakeDocument();
  const $ = (id) => doc.getElementById(id);
  // the scroller: 500px tall, 20px per message (delivered or pending) in the lists on the
  // page, scrollTop clamped like a browser's
  const scroller = $('scroller');
  const rows = () => ['messages', 'outbox'].flatMap((id) => ($(id) ? $(id).children : []));
  let top = 0;
  scroller.clientHeight = 500;
  Object.defineProperty(scroller, 'scrollHeight', { get: () => Math.max(500, 20 * rows().length) });
  Object.defineProperty(scroller, 'scrollTop', {
    get: () => top,
    set: (v) => {
      top = Math.max(0, Math.min(Number(v) || 0, scroller.scrollHeight - scroller.clientHeight));
    },
  });
  const rect = (t, h) => ({ top: t, bottom: t + h, left: 0, right: 800, width: 800, height: h });
  doc.layout = (n) => {
    if (n === scroller) return rect(0, 500);
    const i = rows().indexOf(n);
    return i < 0 ? rect(0, 0) : rect(20 * i - top, 20);
  };
  const storage = { ...stored };
  const localStorage = {
    getItem: (k) => (k in storage ? storage[k] : null),
    setItem: (k, v) => {
      storage[k] = String(v);
    },
  };
  const location = { pathname: '/', search: '', hash };
  const urls = [];
  const setUrl = (kind) => (state, title, url) => {
    urls.push([kind, url]);
    const i = String(url).indexOf('#');
    location.hash = i < 0 ? '' : String(url).slice(i);
  };
  const socket = fakeSocket({ defaultRoom });
  const calls = [];
  const windowListeners = {};
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
      calls.push(plain(args)); // as it was at connect time
      socket.auth = args.at(-1).auth; // the page's own object: what a reconnect sends
      return socket;
    },
    document: doc,
    location,
    history: { pushState: setUrl('push'), replaceState: setUrl('replace') },
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

  const item = (li) => ({
    id: Number(li.getAttribute('data-id')),
    text: li.byClass('msg-text')[0].textContent,
    author: li.byClass('author')[0].textContent,
    time: (li.find((n) => n.tag === 'time')[0] || { textContent: null }).textContent,
    mine: li.classList.contains('mine'),
    cont: li.classList.contains('cont'),
  });
  const page = {
    socket,
    calls,
    clock,
    storage,
    location,
    urls,
    document: doc,
    $,
    active: () => doc.activeElement,
    /** Types `text` in the message box and submits the form, like pressing Enter. */
    send(text) {
      $('input').value = text;
      $('input').dispatch('input');
      return $('form').dispatch('submit');
    },
    /** A left click on an element (it bubbles, as in a browser). */
    click(el) {
      return el.dispatch('click', { button: 0, altKey: false, ctrlKey: false, metaKey: false, shiftKey: false });
    },
    /** Fires an event at the window (hashchange, online, pagehide...). */
    window(type, props = {}) {
      const event = { type, defaultPrevented: false, preventDefault() { this.defaultPrevented = true; }, ...props };
      for (const fn of windowListeners[type] || []) fn(event);
      return event;
    },
    /** The chat messages sent, as [content, clientOffset, meta?] (the ack callback left out; plain objects of this realm). */
    chats: () => plain(socket.sent('chat message').map((e) => e.slice(1).filter((a) => typeof a !== 'function'))),
    /** Acks the n-th `chat message` emit (0-based) with (err, res), as socket.io would. */
    ack(n, res, err = null) {
      const e = socket.sent('chat message')[n];
      e[e.length - 1](err, res);
    },
    /** Answers the latest `join` of `room` with (err, res). */
    ackJoin(room, res, err = null) {
      const e = socket.sent('join').filter((j) => j[1] === room).at(-1);
      assert.ok(e, `a join of ${room} was sent`);
      e.at(-1)(err, res);
    },
    /** The messages shown (the list of the room in view): [{ id, text, author, time, mine, cont }]. */
    shown: () => ($('messages') ? $('messages').children.map(item) : []),
    /** The pending messages shown (the outbox of the room in view): [{ text, state, failed, buttons }]. */
    pending: () =>
      $('outbox').children.map((li) => ({
        text: li.byClass('msg-text')[0].textContent,
        state: li.byClass('msg-state')[0].textContent,
        failed: li.classList.contains('failed'),
        buttons: li.find((n) => n.tag === 'button'),
      })),
    status: () => ({ state: $('status').getAttribute('data-state'), text: $('status-text').textContent }),
    /** The room in view, as its heading says. */
    room: () => $('room-name').textContent,
    /** The list of rooms: [{ name, badge, current, href }]. */
    rooms: () =>
      $('rooms').children.map((li) => {
        const a = li.querySelector('a.room-link');
        return {
          name: li.byClass('room-name')[0].textContent,
          badge: li.byClass('room-badge')[0].textContent,
          current: a.getAttribute('aria-current') === 'page',
        };
      }),
    notices: () => $('notices').children.map((li) => li.textContent),
  };
  return page;
}

/** The meta of a message of the default room, as tidings sends it. */
const general = (author, time = 1) => ({ author, time, room: 'general' });
/** A page that was here before: in `joined`, showing `view`. */
const returning = (joined, view, more = {}) => ({ 'tidings.rooms': JSON.stringify({ joined, view, ...more }) });
const savedRooms = (page) => JSON.parse(page.storage['tidings.rooms'] || '{}');

// ---- the tests --------------------------------------------------------------------------

describe('static/app.js: connecting', () => {
  it('a first visit connects with auth { serverOffset: 0, latest: 50 } (no rooms: the default room), ackTimeout 10000, retries 3', () => {
    const page = load();
    assert.equal(page.calls.length, 1);
    assert.deepEqual(page.calls[0].at(-1), { auth: { serverOffset: 0, latest: 50 }, ackTimeout: 10000, retries: 3 });
    // the server's presence names its default room: the page shows it and stays in it
    assert.equal(page.room(), 'general');
    assert.deepEqual(plain(page.socket.auth.rooms), ['general'], 'a reconnect names it');
    assert.deepEqual(savedRooms(page).joined, ['general'], 'remembered');
    assert.equal(page.location.hash, '#general');
  });

  it('a returning page connects with auth.rooms = the rooms it remembers, and shows the one it showed', () => {
    const page = load({ stored: returning(['dev', 'general', 'Bad!'], 'dev') });
    assert.deepEqual(page.calls[0].at(-1).auth, { serverOffset: 0, latest: 50, rooms: ['dev', 'general'] });
    assert.equal(page.room(), 'dev');
    assert.equal(page.location.hash, '#dev');
    page.clock.tick(0);
    assert.deepEqual(page.rooms().map((r) => [r.name, r.current]), [
      ['dev', true],
      ['general', false],
    ]);
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
  it('sends (content, clientOffset, { author, room }) with unique offsets not built from socket.id', () => {
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
      // the default room by its name: the server keys it as it keys no room at all (README, Rooms)
      assert.deepEqual(plain(meta), { author: 'Ada', room: 'general' });
    }
    assert.equal(new Set(chats.map((c) => c[1])).size, 3, 'every message has its own offset');
    assert.deepEqual(chats.map((c) => c[0]), ['hello', 'hello', 'world']);
    // the ack callback is last, as socket.io-client expects
    assert.equal(typeof page.socket.sent('chat message')[0].at(-1), 'function');
  });

  it('without a name: (content, clientOffset, { room }), no author', () => {
    const page = load();
    page.send('hi');
    assert.deepEqual(page.chats(), [['hi', page.chats()[0][1], { room: 'general' }]]);
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
    page.socket.receive('hello', 1, general('Ada', page.clock.now));
    assert.deepEqual(page.pending(), []);
    assert.deepEqual(page.shown().map((m) => [m.id, m.text, m.author, m.mine]), [[1, 'hello', 'Ada', true]]);
    page.ack(0, { id: 1 });
    assert.deepEqual(page.pending(), []);
    assert.equal(page.shown().length, 1);
  });

  it('an ack whose broadcast did not come shows the message in its place, as mine', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 0, complete: true });
    page.send('hello');
    page.socket.receive('before', 3, general('Bob'));
    page.ack(0, { id: 4 });
    assert.deepEqual(page.pending(), []);
    assert.deepEqual(page.shown().map((m) => [m.id, m.text, m.mine]), [[3, 'before', false], [4, 'hello', true]]);
  });

  it('an ack { id, duplicate: true } (a retry of a stored message) confirms it too', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.send('again');
    page.socket.receive('again', 4, general('Ada', page.clock.now)); // replayed on reconnect
    page.ack(0, { id: 4, duplicate: true });
    assert.deepEqual(page.pending(), []);
    assert.deepEqual(page.shown().map((m) => m.id), [4]);
  });

  it('a message already shown, replayed again, does not take the place of a pending one', () => {
    const page = load();
    page.socket.receive('same words', 1, general(null));
    page.send('same words');
    page.socket.receive('same words', 1, general(null)); // a replay of id 1
    assert.equal(page.pending().length, 1, 'still pending');
    page.socket.receive('same words', 2, general(null)); // its own copy
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
    page.socket.receive('a', 1, general(null));
    page.ack(0, { id: 1 });
    assert.deepEqual(page.chats().map((c) => c[0]), ['a', 'b']);
    page.socket.receive('b', 2, general(null));
    page.ack(1, { id: 2 });
    assert.deepEqual(page.chats().map((c) => c[0]), ['a', 'b', 'c']);
  });

  it('typed while offline: queued, shown as waiting, sent when connected', () => {
    const page = load({ connect: false, stored: returning(['general'], 'general') });
    page.send('later');
    assert.match(page.pending()[0].state, /Waiting for the connection/);
    assert.match(page.status().text, /· 1 unsent$/);
    // socket.io holds the emit until connected (retries); the page shows it as sending then
    page.socket.up();
    assert.equal(page.pending()[0].state, 'Sending…');
    assert.equal(page.status().text, 'Connected');
    assert.deepEqual(page.chats(), [['later', page.chats()[0][1], { room: 'general' }]]);
  });

  it('a first visit that has not connected yet has no room to send to: it says so and keeps the text', () => {
    const page = load({ connect: false });
    page.send('too early');
    assert.equal(page.chats().length, 0);
    assert.equal(page.$('input').value, 'too early');
    assert.deepEqual(page.notices(), ['Join a room to send messages.']);
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
    page.socket.receive('next', 1, general(null));
    page.ack(1, { id: 1 });

    page.click(p.buttons[0]);
    assert.equal(page.chats().length, 3);
    assert.deepEqual(page.chats()[2], page.chats()[0], 'a retry keeps its clientOffset (and room)');
    assert.equal(page.active(), page.$('input'), 'focus back in the message box');
    page.ack(2, { error: 'still no' });
    [p] = page.pending();
    assert.equal(p.state, 'Not sent: still no');
    page.click(p.buttons[1]);
    assert.deepEqual(page.pending(), []);
  });

  it('no answer at all (socket.io gave up retrying): failed, can be retried', () => {
    const page = load();
    page.send('lost');
    page.ack(0, undefined, new Error('operation has timed out'));
    const [p] = page.pending();
    assert.equal(p.failed, true);
    assert.match(p.state, /did not answer/);
    assert.deepEqual(p.buttons.map((b) => b.textContent), ['Retry', 'Discard']);
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
    page.socket.receive('one', 1, general(null));
    page.ack(1, { id: 1 });
    assert.deepEqual(page.chats().map((c) => c[0]), ['one', 'one', 'two']);
  });
});

describe('static/app.js: receiving', () => {
  it('renders each id once and in id order; tracks auth.serverOffset; drops auth.latest', () => {
    const page = load();
    const { socket } = page;
    socket.receive('a', 1, general(null));
    socket.receive('b', 2, general(null));
    socket.receive('b', 2, general(null)); // duplicate
    socket.receive('old', 1, general(null)); // replayed again
    socket.receive('not an id', '7', general(null));
    socket.receive('no id');
    socket.receive('negative', -3, general(null));
    socket.receive('d', 5, general(null));
    socket.receive('c', 4, general(null)); // late: goes in its place
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
    page.socket.receive(evil, 1, { author: '<i>Eve</i>', time: page.clock.now, room: 'general' });
    page.socket.receive('anon', 2, general(null, page.clock.now - 86400000 * 3));
    page.socket.receive('tutorial server', 3); // no meta: the default room's
    const [a, b, c] = page.shown();
    assert.equal(a.text, evil);
    assert.equal(a.author, '<i>Eve</i>');
    assert.match(a.time, /^\d\d:\d\d$/, 'today: the time only');
    assert.equal(b.author, 'anonymous');
    assert.match(b.time, /^\d{1,2} [A-Z][a-z]{2} \d\d:\d\d$/, `another day: the date too (${b.time})`);
    assert.equal(c.time, null, 'no time when the server sends none');
    assert.ok(page.$('messages').children[0].textContent.includes(evil), 'the li contains the content');
    assert.deepEqual(page.$('messages').find((n) => n.tag === 'img' || n.tag === 'b' || n.tag === 'i'), [], 'no element made of it');
  });

  it('groups consecutive messages of one author', () => {
    const page = load();
    const t = page.clock.now;
    page.socket.receive('1', 1, general('Ada', t));
    page.socket.receive('2', 2, general('Ada', t + 1000));
    page.socket.receive('3', 3, general('Bob', t + 2000));
    page.socket.receive('4', 4, general('Bob', t + 20 * 60 * 1000));
    assert.deepEqual(page.shown().map((m) => m.cont), [false, true, false, false]);
  });

  it('marks messages by the same name as mine', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.socket.receive('from another tab', 1, general('Ada'));
    page.socket.receive('from Bob', 2, general('Bob'));
    assert.deepEqual(page.shown().map((m) => m.mine), [true, false]);
  });

  it('a hidden tab counts the others\' messages in its title; leaving with unsent messages asks first', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    assert.equal(page.document.title, '#general · tidings');
    page.document.hidden = true;
    page.socket.receive('psst', 1, general('Bob'));
    page.send('sent from here');
    assert.equal(page.window('beforeunload').defaultPrevented, true, 'not delivered yet');
    page.socket.receive('sent from here', 2, general('Ada'));
    assert.equal(page.document.title, '(1) #general · tidings', "this page's own message is not news");
    assert.equal(page.window('beforeunload').defaultPrevented, false, 'delivered');
    page.document.hidden = false;
    page.document.documentElement.dispatch('visibilitychange');
    assert.equal(page.document.title, '#general · tidings');
  });
});

describe('static/app.js: sync and epochs', () => {
  it('remembers the epoch of `sync` and sends it back when reconnecting', () => {
    const page = load();
    page.socket.receive('a', 1, general(null));
    page.socket.fire('sync', { epoch: '00c0ffee00c0ffee', from: 1, to: 1, complete: true });
    assert.equal(page.socket.auth.epoch, '00c0ffee00c0ffee');
    assert.deepEqual(page.notices(), []);
    page.socket.down();
    page.socket.up();
    page.socket.fire('sync', { epoch: '00c0ffee00c0ffee', from: 2, to: 1, complete: true });
    assert.deepEqual(page.shown().map((m) => m.id), [1], 'same database: nothing changes');
  });

  it('another database (a new epoch): clears the page and replays the latest messages from 0', () => {
    const page = load();
    page.socket.receive('old a', 7, general(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 7, complete: true });
    page.socket.down();
    page.socket.up();
    page.socket.fire('sync', { epoch: 'bbbb', from: 1, to: 0, complete: false });
    assert.deepEqual(page.shown(), []);
    assert.deepEqual(plain(page.socket.auth), { serverOffset: 0, latest: 50, rooms: ['general'], epoch: 'bbbb' });
    assert.equal(page.socket.active, true, 'reconnecting');
    page.socket.up();
    page.socket.receive('new a', 1, general(null));
    assert.deepEqual(page.shown().map((m) => [m.id, m.text]), [[1, 'new a']]);
    assert.match(page.notices().join(), /reset/);
  });

  it('complete: false (messages deleted while away) is told to the user', () => {
    const page = load();
    page.socket.fire('sync', { epoch: 'aaaa', from: 40, to: 50, complete: false });
    assert.match(page.notices().join(), /no longer available/);
  });

  it('the reconnect offset is the newest id of any room, or sync.to if higher', () => {
    const page = load({ stored: returning(['dev', 'general'], 'general') });
    page.socket.receive('in dev', 8, { author: null, time: 1, room: 'dev' });
    assert.equal(page.socket.auth.serverOffset, 8, 'a message of a room not in view moves it too');
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 12, complete: true });
    assert.equal(page.socket.auth.serverOffset, 12);
  });
});

describe('static/app.js: older history', () => {
  it('near the top, asks for the page before the oldest shown and puts it above, in order', () => {
    const page = load();
    for (let id = 71; id <= 120; id++) page.socket.receive(`m${id}`, id, general(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 71, to: 120, complete: true });
    page.clock.tick(200);
    assert.equal(page.socket.sent('history').length, 0, 'not while the reader is at the bottom of a full page');
    const scroller = page.$('scroller');
    scroller.scrollTop = 0;
    scroller.dispatch('scroll');
    scroller.dispatch('scroll');
    const requests = page.socket.sent('history');
    assert.equal(requests.length, 1, 'one request at a time');
    assert.deepEqual(plain(requests[0][1]), { room: 'general', before: 71, limit: 50 });
    const ack = requests[0].at(-1);
    const older = [];
    for (let id = 21; id <= 71; id++) older.push({ id, content: `m${id}`, author: 'Ada', time: 1, room: 'general' }); // 71 overlaps
    ack(null, { messages: older, hasMore: true });
    // 50 more messages (1000px) went in above: the reader still sees message 71 at the top
    assert.equal(scroller.scrollTop, 1000, 'the view stays on what the reader was looking at');
    const ids = page.shown().map((m) => m.id);
    assert.deepEqual(ids, Array.from({ length: 100 }, (_, i) => 21 + i));
    assert.equal(page.socket.auth.serverOffset, 120, 'history does not move the reconnect offset');

    scroller.scrollTop = 0;
    scroller.dispatch('scroll');
    const second = page.socket.sent('history')[1];
    assert.deepEqual(plain(second[1]), { room: 'general', before: 21, limit: 50 });
    second.at(-1)(null, { messages: [{ id: 20, content: 'm20', author: null, time: 1, room: 'general' }], hasMore: false });
    assert.equal(page.$('history-note').hidden, false);
    assert.match(page.$('history-note').textContent, /beginning of the conversation/);
    assert.equal(page.$('older-btn').hidden, true);
    scroller.dispatch('scroll');
    assert.equal(page.socket.sent('history').length, 2, 'nothing more to ask for');
  });

  it('the "Load older messages" button does the same; an error is shown', () => {
    const page = load();
    page.socket.receive('m5', 5, general(null));
    // (the page knows which messages it has from the end of the replay on: `sync`)
    page.socket.fire('sync', { epoch: 'aaaa', from: 5, to: 5, complete: true });
    assert.equal(page.$('older-btn').hidden, false);
    page.clock.tick(200); // the short page fills itself...
    const [fill] = page.socket.sent('history');
    assert.deepEqual(plain(fill[1]), { room: 'general', before: 5, limit: 50 });
    fill.at(-1)(null, { error: 'rate limited?' }); // ...which fails
    assert.match(page.$('history-note').textContent, /Could not load older messages: rate limited\?/);
    page.click(page.$('older-btn'));
    const req = page.socket.sent('history')[1];
    assert.deepEqual(plain(req[1]), { room: 'general', before: 5, limit: 50 });
    req.at(-1)(null, { error: 'boom' });
    assert.match(page.$('history-note').textContent, /Could not load older messages: boom/);
  });

  it('a short page loads older messages by itself, but only once the replay is over (sync)', () => {
    const page = load();
    const history = () => page.socket.sent('history');
    // five replayed messages (100px of a 500px scroller), then the replay pauses
    for (let id = 96; id <= 100; id++) page.socket.receive(`m${id}`, id, general(null));
    page.clock.tick(1000);
    assert.equal(history().length, 0, 'not while the replay may still be arriving');
    page.socket.fire('sync', { epoch: 'aaaa', from: 96, to: 100, complete: true });
    page.clock.tick(200);
    assert.equal(history().length, 1, 'the replay is over and the page is short: fill it');
    assert.deepEqual(plain(history()[0][1]), { room: 'general', before: 96, limit: 50 });
    // one older message, more exist: the page is still short, so it would go on filling...
    history()[0].at(-1)(null, { messages: [{ id: 95, content: 'm95', author: null, time: 1, room: 'general' }], hasMore: true });
    // ...but the connection drops and comes back first: its replay comes before any filling
    page.socket.down();
    page.socket.up();
    page.socket.receive('m101', 101, general(null));
    page.clock.tick(1000);
    assert.equal(history().length, 1, 'nothing asked during the second replay');
    page.socket.fire('sync', { epoch: 'aaaa', from: 101, to: 101, complete: true });
    page.clock.tick(200);
    assert.equal(history().length, 2);
    assert.deepEqual(plain(history()[1][1]), { room: 'general', before: 95, limit: 50 });
  });

  it('the replay scrolling to the bottom as it first fills the page loads nothing older', () => {
    const page = load();
    const history = () => page.socket.sent('history');
    const scroller = page.$('scroller');
    // 26 replayed messages: 520px in a 500px scroller, kept at the bottom: scrollTop 20, near
    // the top, and the browser fires a scroll event for it (a busy machine makes the replay
    // pause right there)
    for (let id = 75; id <= 100; id++) page.socket.receive(`m${id}`, id, general(null));
    assert.equal(scroller.scrollTop, 20, 'kept at the bottom');
    scroller.dispatch('scroll');
    page.clock.tick(1000);
    assert.equal(history().length, 0, 'not during the replay');
    // the rest of the replay, then its end: the page is full and at the bottom, nothing to load
    for (let id = 101; id <= 124; id++) page.socket.receive(`m${id}`, id, general(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 75, to: 124, complete: true });
    page.clock.tick(200);
    assert.equal(history().length, 0, 'the latest 50, nothing older');
    // a reader who scrolls up after the replay gets the older page
    scroller.scrollTop = 0;
    scroller.dispatch('scroll');
    assert.equal(history().length, 1);
    assert.deepEqual(plain(history()[0][1]), { room: 'general', before: 75, limit: 50 });
  });

  it('never asks for history when it starts at id 1', () => {
    const page = load();
    page.socket.receive('first', 1, general(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 1, complete: true });
    page.$('scroller').scrollTop = 0;
    page.$('scroller').dispatch('scroll');
    page.clock.tick(500);
    assert.equal(page.socket.sent('history').length, 0);
    assert.equal(page.$('history-note').hidden, false);
  });

  it('reading up, new messages do not scroll the page: a "new messages" button counts them', () => {
    const page = load();
    for (let id = 1; id <= 40; id++) page.socket.receive(`m${id}`, id, general(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 40, complete: true });
    const scroller = page.$('scroller');
    scroller.scrollTop = 100;
    scroller.dispatch('scroll');
    page.socket.receive('m41', 41, general('Bob'));
    page.socket.receive('m42', 42, general('Bob'));
    assert.equal(scroller.scrollTop, 100, 'the reader stays where they are');
    assert.equal(page.$('jump-btn').hidden, false);
    assert.equal(page.$('jump-btn').textContent, '2 new messages ↓');
    page.click(page.$('jump-btn'));
    assert.equal(scroller.scrollTop, scroller.scrollHeight - 500);
    assert.equal(page.$('jump-btn').hidden, true);
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
    page.click(page.$('toggle-btn'));
    assert.deepEqual(page.status(), { state: 'offline', text: 'Offline' });
    assert.equal(page.$('toggle-btn').textContent, 'Connect');
    page.click(page.$('toggle-btn'));
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

    page.socket.fire('presence', { room: 'general', count: 2, users: ['Bob'] });
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

  /** A presence tick of the default room with news, as the server coalesces it. */
  const news = (users, { joined = [], left = [], joinedCount, leftCount, room = 'general' } = {}) => ({
    room,
    count: users.length,
    users,
    joined,
    joinedCount: joinedCount ?? joined.length,
    left,
    leftCount: leftCount ?? left.length,
  });

  it('who is online, with count; joined / left / renamed notices that go away', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    page.socket.fire('presence', { room: 'general', count: 3, users: ['Ada', 'Bob'] });
    assert.equal(page.$('online-count').textContent, '3');
    assert.equal(page.$('people-room').textContent, 'in #general');
    assert.deepEqual(page.$('people').children.map((li) => li.textContent), ['AAda(you)', 'BBob']);
    assert.match(page.$('people-note').textContent, /1 more without a name/);
    page.socket.fire('presence', news(['Ada'], { left: ['Bob'] }));
    page.clock.tick(10000);
    assert.deepEqual(page.notices(), []);
    page.socket.fire('presence', news(['Ada', 'Bob'], { joined: ['Ada', 'Bob'] }));
    page.socket.fire('user renamed', { from: 'Bob', to: 'Robert' });
    page.socket.fire('presence', news(['Ada'], { left: ['Robert'] }));
    assert.deepEqual(page.notices(), ['Bob joined', 'Bob is now Robert', 'Robert left']);
    page.clock.tick(10000);
    assert.deepEqual(page.notices(), []);
  });

  it('many joins in one tick make one notice; news right after reconnecting makes none', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    const crowd = ['Bob', 'Cy', 'Dee', 'Eve'];
    page.socket.down();
    page.socket.up();
    page.socket.fire('presence', news(['Ada', ...crowd], { joined: ['Ada', ...crowd] }));
    assert.deepEqual(page.notices(), [], 'everyone reconnected with this page');
    page.clock.tick(6000);
    const more = ['Fay', 'Gus', 'Hal', 'Ivy'];
    page.socket.fire('presence', news(['Ada', ...crowd, ...more], { joined: more, joinedCount: 250 }));
    assert.deepEqual(page.notices(), ['Fay, Gus and 248 others joined']);
  });

  it('news is what the page did not list already; the first list after connecting is none', () => {
    // A newcomer's first list can name someone who came a moment before it, in the same
    // presence tick as its own arrival: not news to it.
    const page = load({ stored: { 'tidings.nickname': 'Bob' }, connect: false });
    page.socket.up({ users: ['Alice', 'Bob'] });
    page.socket.fire('presence', news(['Alice', 'Bob'], { joined: ['Alice', 'Bob'] }));
    assert.deepEqual(page.notices(), []);
    page.socket.fire('presence', news(['Alice', 'Bob', 'Cy'], { joined: ['Bob', 'Cy'], joinedCount: 3 }));
    assert.deepEqual(page.notices(), ['Cy and 1 other joined']);
    page.socket.fire('presence', news(['Bob'], { left: ['Alice', 'Dan'] }));
    assert.deepEqual(page.notices(), ['Cy and 1 other joined', 'Alice left'], 'Dan was never listed here');
    page.socket.fire('presence', news(['Bob'], { joined: [], joinedCount: 1 }));
    assert.ok(page.notices().includes('1 person without a name joined'), JSON.stringify(page.notices()));
  });

  it('the same notice is not shown twice (everyone rejoins after a server restart)', () => {
    const page = load();
    page.socket.fire('presence', news([]));
    page.socket.fire('presence', news(['Bob'], { joined: ['Bob'] }));
    page.clock.tick(4000);
    page.socket.fire('presence', news([], { left: ['Bob'] }));
    page.socket.fire('presence', news(['Bob'], { joined: ['Bob'] }));
    assert.deepEqual(page.notices(), ['Bob left', 'Bob joined']);
    const joinedShown = () => page.notices().filter((n) => n === 'Bob joined').length;
    page.clock.tick(6000);
    assert.equal(joinedShown(), 1, 'its time starts again');
    page.clock.tick(3000);
    assert.equal(joinedShown(), 0);
  });

  it('while disconnected the online list is marked as possibly out of date', () => {
    const page = load();
    page.socket.fire('presence', { room: 'general', count: 2, users: ['Ada', 'Bob'] });
    page.socket.down();
    assert.equal(page.$('sidebar').classList.contains('stale'), true);
    assert.match(page.$('people-note').textContent, /out of date/);
    page.socket.up();
    assert.equal(page.$('sidebar').classList.contains('stale'), false);
  });

  it('"X is typing…" for others, cleared by typing:false, their message, leaving, or time', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    const typing = (nickname, on) => page.socket.fire('typing', { room: 'general', nickname, typing: on });
    typing('Bob', true);
    assert.equal(page.$('typing').textContent, 'Bob is typing…');
    typing('Cy', true);
    assert.equal(page.$('typing').textContent, 'Bob and Cy are typing…');
    typing('Ada', true); // never yourself
    typing('Bob', false);
    assert.equal(page.$('typing').textContent, 'Cy is typing…');
    page.socket.receive('hi', 1, general('Cy'));
    assert.equal(page.$('typing').textContent, '');
    typing('Dee', true);
    page.socket.fire('presence', news(['Ada'], { left: ['Dee'] }));
    assert.equal(page.$('typing').textContent, '');
    typing('Eve', true);
    page.clock.tick(7000);
    assert.equal(page.$('typing').textContent, '', 'forgotten if not refreshed');
    page.socket.fire('typing', { nickname: 'Fay', typing: true }); // no room: the default room
    assert.equal(page.$('typing').textContent, 'Fay is typing…');
  });

  it('announces its own typing as { room, typing } (volatile, a few times a second at most) and its end', () => {
    const page = load({ stored: { 'tidings.nickname': 'Ada' } });
    const input = page.$('input');
    const on = { room: 'general', typing: true };
    const off = { room: 'general', typing: false };
    for (const v of ['h', 'he', 'hel']) {
      input.value = v;
      input.dispatch('input');
    }
    assert.deepEqual(plain(page.socket.volatileEmitted), [['typing', on]]);
    assert.equal(page.socket.sent('typing').length, 0, 'never through the retry queue');
    page.clock.tick(3500);
    assert.deepEqual(plain(page.socket.volatileEmitted), [['typing', on], ['typing', off]], 'idle: stopped');
    input.value = 'hello';
    input.dispatch('input');
    page.$('form').dispatch('submit');
    assert.deepEqual(plain(page.socket.volatileEmitted).slice(2), [['typing', on], ['typing', off]], 'sent: stopped');
    input.value = 'x';
    input.dispatch('input');
    page.$('nick-btn').focus(); // the message box loses the focus
    assert.deepEqual(plain(page.socket.volatileEmitted).slice(4), [['typing', on], ['typing', off]], 'blur: stopped');

    const anon = load();
    anon.$('input').value = 'x';
    anon.$('input').dispatch('input');
    assert.deepEqual(anon.socket.volatileEmitted, [], 'no typing events without a name');
  });
});

describe('static/app.js: rooms', () => {
  const dev = (author, time = 1) => ({ author, time, room: 'dev' });
  /** The link of `name` in the list of rooms. */
  const link = (page, name) => page.$('rooms').find((n) => n.tag === 'a' && n.dataset.room === name)[0];

  it('a message of a room not in view is not rendered there: it counts as unread, and shows when the room is opened', () => {
    const page = load({ stored: { ...returning(['dev', 'general'], 'general'), 'tidings.nickname': 'Ada' } });
    page.socket.receive('hi all', 1, general('Bob'));
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 1, complete: true });
    page.socket.receive('in dev', 2, dev('Bob'));
    page.socket.receive('more in dev', 3, dev('Cy'));
    page.socket.receive('mine, from another tab', 4, dev('Ada'));
    page.socket.receive('<b>x</b>', 5, { author: 'Eve', time: 1, room: '<b>x</b>' }); // no such room name
    page.clock.tick(0);
    assert.deepEqual(page.shown().map((m) => m.id), [1], 'only the room in view');
    assert.deepEqual(page.rooms().map((r) => [r.name, r.badge]), [
      ['dev', '2'],
      ['general', ''],
    ]);
    assert.equal(page.$('rooms-unread').hidden, false);
    assert.equal(page.$('rooms-unread').textContent, '2');
    assert.equal(page.socket.sent('leave').length, 0, 'an invalid name is not a room');

    page.click(link(page, 'dev'));
    assert.equal(page.room(), 'dev');
    assert.deepEqual(page.urls.at(-1), ['push', '/#dev']);
    assert.deepEqual(page.shown().map((m) => [m.id, m.mine]), [[2, false], [3, false], [4, true]]);
    const firstNew = page.$('messages').querySelector('.first-unread');
    assert.equal(firstNew && firstNew.getAttribute('data-id'), '2', 'a "New" line above the first unread');
    page.clock.tick(500);
    assert.deepEqual(page.rooms().map((r) => [r.name, r.badge, r.current]), [
      ['dev', '', true],
      ['general', '', false],
    ]);
    assert.equal(page.$('rooms-unread').hidden, true);
    assert.deepEqual(savedRooms(page).read, { general: 1, dev: 4 }, 'read marks kept for the next visit');
  });

  it('presence and typing are per room: only the room in view shows them, each room keeps its own', () => {
    const page = load({ stored: { ...returning(['dev', 'general'], 'general'), 'tidings.nickname': 'Ada' } });
    page.clock.tick(6000); // past the quiet time after connecting
    page.socket.fire('presence', { room: 'dev', count: 2, users: ['Ada', 'Cy'], joined: ['Cy'], joinedCount: 1, left: [], leftCount: 0 });
    page.socket.fire('typing', { room: 'dev', nickname: 'Cy', typing: true });
    assert.deepEqual(page.notices(), [], 'news of another room is not told');
    assert.equal(page.$('typing').textContent, '');
    assert.equal(page.$('online-count').textContent, '1', "the room in view's count");
    page.click(link(page, 'dev'));
    assert.equal(page.$('online-count').textContent, '2');
    assert.equal(page.$('people-room').textContent, 'in #dev');
    assert.deepEqual(page.$('people').children.map((li) => li.textContent), ['AAda(you)', 'CCy']);
    assert.equal(page.$('typing').textContent, 'Cy is typing…');
    page.socket.fire('typing', { room: 'general', nickname: 'Bob', typing: true });
    assert.equal(page.$('typing').textContent, 'Cy is typing…');
  });

  it('switching rooms keeps each room its pending messages (sent in order, each to its room) and its draft', () => {
    const page = load({ stored: returning(['dev', 'general'], 'general') });
    page.send('to general');
    page.click(link(page, 'dev'));
    assert.equal(page.room(), 'dev');
    assert.deepEqual(page.pending(), [], "general's pending message is not shown in dev");
    page.send('to dev');
    assert.deepEqual(page.pending().map((p) => [p.text, p.state]), [['to dev', 'Queued']]);
    page.$('input').value = 'half a thought';
    page.$('input').dispatch('input');
    // Alt+↑: the previous room
    page.$('input').dispatch('keydown', { key: 'ArrowUp', altKey: true, ctrlKey: false, metaKey: false });
    assert.equal(page.room(), 'general');
    assert.equal(page.$('input').value, '');
    assert.deepEqual(page.pending().map((p) => [p.text, p.state]), [['to general', 'Sending…']]);
    page.socket.receive('to general', 5, general(null));
    page.ack(0, { id: 5 });
    assert.deepEqual(page.pending(), []);
    assert.deepEqual(page.chats().map((c) => [c[0], c[2]]), [
      ['to general', { room: 'general' }],
      ['to dev', { room: 'dev' }],
    ]);
    page.click(link(page, 'dev'));
    assert.equal(page.$('input').value, 'half a thought');
    assert.deepEqual(page.pending().map((p) => [p.text, p.state]), [['to dev', 'Sending…']]);
    assert.deepEqual(page.shown(), []);
    page.socket.receive('to dev', 6, dev(null));
    assert.deepEqual(page.shown().map((m) => [m.id, m.text, m.mine]), [[6, 'to dev', true]]);
    assert.deepEqual(page.pending(), []);
  });

  it('typing is sent as { room, typing }; leaving the room in view for another stops it there', () => {
    const page = load({ stored: { ...returning(['dev', 'general'], 'general'), 'tidings.nickname': 'Ada' } });
    page.$('input').value = 'h';
    page.$('input').dispatch('input');
    page.click(link(page, 'dev'));
    page.$('input').value = 'x';
    page.$('input').dispatch('input');
    assert.deepEqual(plain(page.socket.volatileEmitted), [
      ['typing', { room: 'general', typing: true }],
      ['typing', { room: 'general', typing: false }],
      ['typing', { room: 'dev', typing: true }],
    ]);
  });

  it('join: checked on the page, `join` → { room, last }, then history ({ room, before: last + 1 }); live and history meet without a gap', () => {
    const page = load();
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 3, complete: true });
    page.click(page.$('join-btn'));
    assert.equal(page.$('join-form').hidden, false);
    const [directory] = page.socket.sent('rooms');
    directory.at(-1)(null, { rooms: [{ name: 'dev', members: 2, last: 41 }, { name: 'general', members: 1, last: 3 }] });
    assert.deepEqual(page.$('directory').children.map((li) => li.textContent), ['#dev2 online'], 'the rooms the page is not in');

    page.$('join-input').value = 'Dev Room';
    page.$('join-form').dispatch('submit');
    assert.equal(page.$('join-error').textContent, 'A room name can use only a-z, 0-9, - and _ (not “D”, spaces, “R”).');
    assert.equal(page.socket.sent('join').length, 0);

    page.$('join-input').value = '#dev';
    page.$('join-form').dispatch('submit');
    assert.deepEqual(page.socket.sent('join').map((j) => j[1]), ['dev']);
    assert.equal(typeof page.socket.sent('join')[0].at(-1), 'function', 'with an ack');
    assert.equal(page.$('join-form').hidden, true);
    assert.equal(page.room(), 'dev');
    assert.equal(page.location.hash, '#dev');
    assert.equal(page.$('empty').textContent, 'Joining #dev…');
    page.clock.tick(0);
    assert.deepEqual(page.rooms().map((r) => [r.name, r.badge]), [
      ['dev', 'joining…'],
      ['general', ''],
    ]);

    page.socket.receive('live, before the ack', 42, dev('Bob'));
    page.ackJoin('dev', { room: 'dev', last: 41 });
    assert.deepEqual(savedRooms(page).joined, ['general', 'dev']);
    assert.deepEqual(plain(page.socket.auth.rooms), ['general', 'dev'], 'a reconnect is in both');
    page.clock.tick(200);
    const [req] = page.socket.sent('history');
    assert.deepEqual(plain(req[1]), { room: 'dev', before: 42, limit: 50 });
    req.at(-1)(null, {
      messages: [
        { id: 40, content: 'old', author: 'Cy', time: 1, room: 'dev' },
        { id: 41, content: 'last before the join', author: 'Cy', time: 1, room: 'dev' },
      ],
      hasMore: false,
    });
    page.socket.receive('live, after', 43, dev('Bob'));
    assert.deepEqual(page.shown().map((m) => m.id), [40, 41, 42, 43]);
    assert.equal(page.$('history-note').textContent, 'This is the beginning of the conversation.');
  });

  it('a refused join is shown with the reason, and can be tried again or closed', () => {
    const page = load();
    page.click(page.$('join-btn'));
    page.$('join-input').value = 'dev';
    page.$('join-form').dispatch('submit');
    page.ackJoin('dev', { error: 'too many rooms: this connection is in 100, the limit' });
    assert.equal(page.$('room-error').hidden, false);
    assert.equal(page.$('room-error-text').textContent, 'Could not join #dev: too many rooms: this connection is in 100, the limit');
    page.send('hello?');
    assert.equal(page.chats().length, 0, 'nothing is sent to a room the page is not in');
    page.click(page.$('room-retry'));
    assert.equal(page.socket.sent('join').length, 2);
    page.ackJoin('dev', undefined, new Error('operation has timed out'));
    assert.equal(page.$('room-error-text').textContent, 'Could not join #dev: the server did not answer.');
    page.click(page.$('room-close'));
    assert.equal(page.room(), 'general');
    page.clock.tick(0);
    assert.deepEqual(page.rooms().map((r) => r.name), ['general']);
    assert.deepEqual(savedRooms(page).joined, ['general']);
  });

  it('an id both fetched with history and replayed by a plain reconnect is shown once; one older than the history loaded waits for it', () => {
    const page = load();
    page.socket.receive('g5', 5, general(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 5, complete: true });
    page.click(page.$('join-btn'));
    page.$('join-input').value = 'dev';
    page.$('join-form').dispatch('submit');
    page.ackJoin('dev', { room: 'dev', last: 10 });
    page.clock.tick(200);
    const history = () => page.socket.sent('history');
    assert.deepEqual(plain(history()[0][1]), { room: 'dev', before: 11, limit: 50 });
    history()[0].at(-1)(null, {
      messages: [9, 10].map((id) => ({ id, content: `d${id}`, author: null, time: 1, room: 'dev' })),
      hasMore: true,
    });
    assert.equal(page.socket.auth.serverOffset, 5, 'history and joins do not move the reconnect offset');
    // no recovery: the server replays every message of both rooms after 5
    page.socket.down();
    page.socket.up();
    for (const id of [7, 9, 10, 11]) page.socket.receive(`d${id}`, id, dev(null));
    page.socket.fire('sync', { epoch: 'aaaa', from: 6, to: 11, complete: true });
    assert.deepEqual(page.shown().map((m) => m.id), [9, 10, 11], 'each once; 7 is in the history above');
    page.clock.tick(200);
    assert.deepEqual(plain(history()[1][1]), { room: 'dev', before: 9, limit: 50 });
    history()[1].at(-1)(null, {
      messages: [7, 8].map((id) => ({ id, content: `d${id}`, author: null, time: 1, room: 'dev' })),
      hasMore: false,
    });
    assert.deepEqual(page.shown().map((m) => [m.id, m.text]), [7, 8, 9, 10, 11].map((id) => [id, `d${id}`]));
  });

  it('leave: not with messages still to send; then gone from the list, from auth.rooms and from what is shown', () => {
    const page = load({ stored: returning(['dev', 'general'], 'dev') });
    page.socket.fire('sync', { epoch: 'aaaa', from: 1, to: 0, complete: true });
    page.send('wait for me');
    page.click(page.$('leave-btn'));
    assert.deepEqual(page.notices(), ['#dev has a message not sent yet: leave once it is delivered.']);
    assert.equal(page.socket.sent('leave').length, 0);
    page.socket.receive('wait for me', 1, dev(null));
    page.ack(0, { id: 1 });

    page.click(page.$('leave-btn'));
    assert.deepEqual(page.socket.sent('leave').map((l) => l[1]), ['dev']);
    assert.equal(page.room(), 'general', 'the next room is shown');
    page.clock.tick(0);
    assert.deepEqual(page.rooms().map((r) => r.name), ['general']);
    assert.deepEqual(savedRooms(page).joined, ['general']);
    assert.deepEqual(plain(page.socket.auth.rooms), ['general']);
    page.socket.receive('said as it left', 2, dev('Bob'));
    page.socket.sent('leave')[0].at(-1)(null, { ok: true });
    page.socket.receive('said after', 3, dev('Bob'));
    assert.deepEqual(page.shown(), []);
    page.clock.tick(0);
    assert.deepEqual(page.rooms().map((r) => [r.name, r.badge]), [['general', '']]);
    assert.deepEqual(page.socket.sent('leave').map((l) => l[1]), ['dev', 'dev'], 'told again, once, that it is not in dev');
    page.socket.receive('and again', 4, dev('Bob'));
    assert.equal(page.socket.sent('leave').length, 2);
  });

  it('the room in the URL: a first visit to #dev joins it next to the default room; a bad name says why', () => {
    const page = load({ hash: '#dev' });
    assert.deepEqual(page.socket.sent('join').map((j) => j[1]), ['dev']);
    assert.equal(page.room(), 'dev');
    page.clock.tick(0);
    assert.deepEqual(page.rooms().map((r) => r.name), ['dev', 'general']);
    page.ackJoin('dev', { room: 'dev', last: 0 });
    page.location.hash = '#general';
    page.window('hashchange');
    assert.equal(page.room(), 'general');

    const bad = load({ hash: '#Dev!' });
    assert.equal(bad.room(), 'general');
    assert.equal(bad.location.hash, '#general');
    assert.equal(bad.socket.sent('join').length, 0);
    assert.deepEqual(bad.notices(), ['The link names no room: A room name can use only a-z, 0-9, - and _ (not “D”, “!”).']);
  });
});

describe('static/index.html and style.css', () => {
  it('keeps the tutorial skeleton: form#form, input#input, ul#messages', () => {
    assert.match(PAGE, /<form id="form" action="">/);
    assert.match(PAGE, /<input id="input" autocomplete="off"/);
    // the room in view's list carries id="messages" (app.js gives each room its own list)
    assert.match(PAGE, /<ul id="messages" class="messages"><\/ul>/);
    assert.match(PAGE, /<button id="toggle-btn"/);
    for (const id of ['status', 'scroller', 'outbox', 'people', 'typing', 'notices', 'nick-form', 'older-btn', 'rooms', 'room-name', 'join-form', 'leave-btn']) {
      assert.ok(IDS.includes(id), `#${id}`);
    }
    assert.equal(new Set(IDS).size, IDS.length, 'ids are unique');
    const used = [...APP.matchAll(/\$\('([^']+)'\)/g)].map((m) => m[1]);
    assert.ok(used.length > 20);
    for (const id of used) assert.ok(IDS.includes(id), `app.js uses #${id}: it is on the page`);
  });

  it('a room switch hands id="messages" and id="outbox" to the lists of the room shown, once each', () => {
    const page = load({ stored: returning(['dev', 'general'], 'general') });
    page.socket.receive('g', 1, general(null));
    const generalList = page.$('messages');
    page.$('rooms').find((n) => n.tag === 'a' && n.dataset.room === 'dev')[0].dispatch('click', { button: 0 });
    const ids = page.document.documentElement.find((n) => n.id === 'messages' || n.id === 'outbox');
    assert.deepEqual(ids.map((n) => n.id), ['messages', 'outbox']);
    assert.notEqual(page.$('messages'), generalList);
    assert.equal(generalList.isConnected, false);
    assert.equal(page.$('messages').parentElement, page.$('outbox').parentElement);
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
