'use strict';
// The system Chromium (never a downloaded one), driven by playwright-core, plus helpers that
// read the chat page. Every wait is bounded.
//
//   describe('...', () => { const ctx = setup(); it('...', { skip: SKIP }, async () => { ... }) })
//
// Chromium is looked up at $CHROMIUM_PATH, else /usr/bin/chromium. When it is missing:
// outside CI the suites are skipped with the reason; with CI set, launch() fails loudly.

const fs = require('node:fs');
const path = require('node:path');
const { before, after } = require('node:test');
const { io } = require('socket.io-client');
const server = require('./server');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const IN_CI = !!process.env.CI && process.env.CI !== 'false' && process.env.CI !== '0';
const SCREENSHOTS = path.resolve(__dirname, '../../target/screenshots');
const WAIT_MS = 10000;

function chromiumProblem() {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
    return null;
  } catch (e) {
    return `Chromium not found at ${CHROMIUM} (${e.code}); install it (apt-get install -y chromium) or set CHROMIUM_PATH`;
  }
}

const PROBLEM = chromiumProblem();
/** The `skip` option for the suites: a reason outside CI when Chromium is missing, else false. */
const SKIP = PROBLEM && !IN_CI ? PROBLEM : false;

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches the system Chromium with a fresh profile (playwright makes a temp user-data-dir). */
async function launch() {
  if (PROBLEM) throw new Error(`CI is set and the browser tests cannot run: ${PROBLEM}`);
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    throw new Error(`playwright-core is not installed (run npm ci in tests/browser): ${e.message}`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
}

const DESKTOP = { width: 1180, height: 760 };
const PHONE = { width: 390, height: 780 };

/**
 * A page in a new browser context (its own localStorage: one "person"), not loaded yet.
 * Console errors and page errors are collected in page.problems, dialogs in page.dialogs.
 * nickname: stored in localStorage before the first load (as if picked on an earlier visit).
 */
async function newPage(browser, { viewport = DESKTOP, colorScheme = 'light', nickname } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, colorScheme });
  context.setDefaultTimeout(WAIT_MS);
  if (nickname !== undefined) {
    await context.addInitScript((name) => {
      // only on the first load: later loads keep what the page itself stored
      if (!sessionStorage.getItem('seeded')) {
        localStorage.setItem('tidings.nickname', name);
        sessionStorage.setItem('seeded', '1');
      }
    }, nickname);
  }
  const page = await context.newPage();
  page.problems = [];
  page.dialogs = [];
  page.on('pageerror', (err) => page.problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.problems.push(`console error: ${msg.text()} (${msg.location().url || 'no url'})`);
  });
  page.on('dialog', (dialog) => {
    page.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return page;
}

/**
 * A new browser context (its own localStorage: one "person") with a page on `url`.
 * nickname: stored in localStorage before the page loads (as if picked on an earlier visit).
 * colorScheme: 'light' (default) or 'dark' (the page follows the system's choice).
 * Console errors and page errors are collected in page.problems; CSP violations among them.
 */
async function openChat(browser, url, { nickname, viewport = DESKTOP, colorScheme = 'light', path: route = '/', waitConnected = true } = {}) {
  const page = await newPage(browser, { viewport, colorScheme, nickname });
  const response = await page.goto(url + route, { waitUntil: 'load', timeout: WAIT_MS });
  page.response = response;
  if (waitConnected) await waitStatus(page, 'connected');
  return page;
}

/** Runs `fn` in the page until it returns a truthy value; fails after timeoutMs with `what` and the page's state. */
async function until(page, fn, arg, what, timeoutMs = WAIT_MS) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 50 });
    return await handle.jsonValue();
  } catch (e) {
    let state = '';
    try {
      state = JSON.stringify(await pageState(page), null, 1);
    } catch {}
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\npage state: ${state}\n(${e.message.split('\n')[0]})`);
  }
}

/** The connection status shown: { state, text }. */
function status(page) {
  return page.evaluate(() => ({
    state: document.getElementById('status').getAttribute('data-state'),
    text: document.getElementById('status-text').textContent,
  }));
}

function waitStatus(page, state, timeoutMs = WAIT_MS) {
  return until(
    page,
    (s) => document.getElementById('status').getAttribute('data-state') === s,
    state,
    `status "${state}"`,
    timeoutMs,
  );
}

/** What #messages shows: [{ id, text, author, time, mine }], in page order. */
function shownMessages(page) {
  return page.$$eval('#messages > li', (lis) =>
    lis.map((li) => ({
      id: Number(li.getAttribute('data-id')),
      text: li.querySelector('.msg-text') ? li.querySelector('.msg-text').textContent : li.textContent,
      author: li.querySelector('.author') ? li.querySelector('.author').textContent : null,
      time: li.querySelector('time') ? li.querySelector('time').textContent : null,
      mine: li.classList.contains('mine'),
    })),
  );
}

/** What #outbox shows (messages not confirmed yet): [{ text, state }]. */
function pendingMessages(page) {
  return page.$$eval('#outbox > li', (lis) =>
    lis.map((li) => ({
      text: li.querySelector('.msg-text').textContent,
      state: li.querySelector('.msg-state').textContent,
      failed: li.classList.contains('failed'),
    })),
  );
}

async function pageState(page) {
  return page.evaluate(() => ({
    status: document.getElementById('status') && document.getElementById('status').textContent.trim(),
    messages: [...document.querySelectorAll('#messages > li')].slice(-8).map((li) => `${li.getAttribute('data-id')}: ${li.textContent}`),
    count: document.querySelectorAll('#messages > li').length,
    outbox: [...document.querySelectorAll('#outbox > li')].map((li) => li.textContent),
    typing: document.getElementById('typing') && document.getElementById('typing').textContent,
    notices: [...document.querySelectorAll('#notices > li')].map((li) => li.textContent),
    people: [...document.querySelectorAll('#people > li')].map((li) => li.textContent),
  }));
}

/** Waits until the page shows a message with exactly this text (confirmed, in #messages). */
function waitMessage(page, text, timeoutMs = WAIT_MS) {
  return until(
    page,
    (t) => [...document.querySelectorAll('#messages > li .msg-text')].some((e) => e.textContent === t),
    text,
    `message ${JSON.stringify(text)} on the page`,
    timeoutMs,
  );
}

/** Types into #input and presses Enter, like a user (the keyboard, not a programmatic submit). */
async function typeAndSend(page, text) {
  await page.click('#input');
  await page.fill('#input', '');
  await page.keyboard.type(text, { delay: 0 });
  await page.keyboard.press('Enter');
}

/** Asserts ids strictly increase, each id and each text (if `uniqueTexts`) once. */
function checkOrder(assert, list, { uniqueTexts = true } = {}) {
  for (let i = 1; i < list.length; i++) {
    assert.ok(list[i].id > list[i - 1].id, `ids in order: ${list[i - 1].id} then ${list[i].id}`);
  }
  if (uniqueTexts) {
    const texts = list.map((m) => m.text);
    assert.equal(new Set(texts).size, texts.length, `no text twice: ${JSON.stringify(texts)}`);
  }
}

/** Saves target/screenshots/NAME.png (the viewport). */
async function screenshot(page, name) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  // no caret blinking or spinner mid-turn in the picture
  await page.screenshot({ path: file, animations: 'disabled', caret: 'hide', timeout: WAIT_MS });
  return file;
}

/** Problems (page errors, console errors) except those matching `allowed` regexps. */
function problems(page, allowed = []) {
  return page.problems.filter((p) => !allowed.some((re) => re.test(p)));
}

// ---- socket.io-client helpers (seeding and checking what is stored) ----------------------

const sockets = new Set();

function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, transports: ['websocket'], reconnection: false, ...opts });
  sockets.add(socket);
  return socket;
}

function connected(socket, timeoutMs = WAIT_MS) {
  if (socket.connected) return Promise.resolve(socket);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket not connected after ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('connect_error', (e) => {
      clearTimeout(timer);
      reject(new Error(`connect_error: ${e.message}`));
    });
  });
}

/** Sends a message and resolves with its ack (bounded). */
function send(socket, content, clientOffset, meta) {
  const args = meta === undefined ? [content, clientOffset] : [content, clientOffset, meta];
  return socket.timeout(WAIT_MS).emitWithAck('chat message', ...args);
}

/** Every stored message, oldest first, read with `history` pages: [{ id, content, author, time }]. */
async function storedMessages(url) {
  const socket = client(url);
  try {
    await connected(socket);
    const all = [];
    let before = null;
    for (let pages = 0; pages < 1000; pages++) {
      const res = await socket.timeout(WAIT_MS).emitWithAck('history', { before, limit: 200 });
      if (!res || !Array.isArray(res.messages)) throw new Error(`history answered ${JSON.stringify(res)}`);
      all.unshift(...res.messages);
      if (!res.hasMore || res.messages.length === 0) return all;
      before = res.messages[0].id;
    }
    throw new Error('history never ended');
  } finally {
    socket.disconnect();
    sockets.delete(socket);
  }
}

function closeSockets() {
  for (const s of sockets) s.disconnect();
  sockets.clear();
}

/**
 * Registers before/after hooks in the current describe(): one Chromium and one tidings server
 * (fresh db, `serverArgs` extra flags) for the suite. Returns { browser, srv } filled in by `before`.
 */
function setup({ serverArgs = ['--rate-limit', '0'] } = {}) {
  const ctx = { browser: null, srv: null, serverArgs };
  if (SKIP) return ctx; // every test is skipped, with the reason
  before(async () => {
    ctx.browser = await launch();
    ctx.srv = await server.start({ extraArgs: serverArgs });
  });
  after(async () => {
    closeSockets();
    if (ctx.browser) await ctx.browser.close().catch(() => {});
    await server.stopAll();
    server.cleanup();
  });
  return ctx;
}

module.exports = {
  setup,
  newPage,
  SKIP,
  IN_CI,
  CHROMIUM,
  SCREENSHOTS,
  WAIT_MS,
  DESKTOP,
  PHONE,
  launch,
  openChat,
  until,
  status,
  waitStatus,
  shownMessages,
  pendingMessages,
  pageState,
  waitMessage,
  typeAndSend,
  checkOrder,
  screenshot,
  problems,
  client,
  connected,
  send,
  storedMessages,
  closeSockets,
};
