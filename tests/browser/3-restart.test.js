'use strict';
// Scenario 3: the server is killed (SIGKILL) and restarted on the same port and database while
// pages are open. The status shows it; a message typed meanwhile is delivered exactly once.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');
const server = require('./server');

// console noise the browser itself prints while the server is down
const NETWORK_ERRORS = [/WebSocket connection to .* failed/, /Failed to load resource: net::ERR_CONNECTION_REFUSED/];

describe('server restart', () => {
  const ctx = B.setup();

  it('status shows the outage; a message typed meanwhile arrives once after the restart', { skip: B.SKIP }, async () => {
    const { url, port, db } = ctx.srv;
    const alice = await B.openChat(ctx.browser, url, { nickname: 'Alice' });
    const bob = await B.openChat(ctx.browser, url, { nickname: 'Bob', viewport: B.PHONE });
    assert.deepEqual(await B.status(alice), { state: 'connected', text: 'Connected' });

    await B.typeAndSend(alice, 'before the crash');
    await B.waitMessage(bob, 'before the crash');
    await B.until(alice, () => document.querySelectorAll('#outbox > li').length === 0, null, 'the first message confirmed');

    await ctx.srv.stop({ signal: 'SIGKILL' });
    const down = await B.until(
      alice,
      () => {
        const s = document.getElementById('status');
        const t = document.getElementById('status-text').textContent;
        return s.getAttribute('data-state') === 'reconnecting' && /Reconnecting \(attempt \d+\)/.test(t) && t;
      },
      null,
      'the status "Reconnecting (attempt n)…"',
      20000,
    );
    assert.match(down, /^Reconnecting \(attempt \d+\)…$/);
    await B.waitStatus(bob, 'reconnecting', 20000);

    // typed while the server is down: shown as pending, not as a delivered message
    const text = 'typed while the server was down';
    await B.typeAndSend(alice, text);
    const pending = await B.pendingMessages(alice);
    assert.equal(pending.length, 1, 'one pending message');
    assert.equal(pending[0].text, text);
    assert.equal(pending[0].failed, false);
    assert.match(pending[0].state, /Waiting for the connection/);
    assert.equal((await B.shownMessages(alice)).some((m) => m.text === text), false, 'not shown as delivered');
    await B.until(alice, () => / · 1 unsent$/.test(document.getElementById('status-text').textContent), null, 'the status counting it');
    await B.screenshot(alice, '3-restart-down-alice');
    await B.screenshot(bob, '3-restart-down-bob');

    const again = await server.start({ db, port, extraArgs: ctx.serverArgs });
    ctx.srv = again;
    await B.waitStatus(alice, 'connected', 20000);
    await B.waitStatus(bob, 'connected', 20000);
    await B.waitMessage(alice, text, 20000);
    await B.waitMessage(bob, text, 20000);
    await B.until(alice, () => document.querySelectorAll('#outbox > li').length === 0, null, 'the outbox to empty', 20000);

    // a message sent after the restart: once it is on both pages, nothing else is in flight
    await B.typeAndSend(bob, 'after the restart');
    await B.waitMessage(alice, 'after the restart');
    await B.waitMessage(bob, 'after the restart');

    const expected = [
      ['before the crash', 'Alice'],
      [text, 'Alice'],
      ['after the restart', 'Bob'],
    ];
    for (const [who, page] of [['Alice', alice], ['Bob', bob]]) {
      const shown = await B.shownMessages(page);
      assert.deepEqual(shown.map((m) => [m.text, m.author]), expected, `${who}'s page: each message once, in order`);
      B.checkOrder(assert, shown);
    }
    assert.deepEqual(await B.status(alice), { state: 'connected', text: 'Connected' });

    // stored exactly once
    const stored = await B.storedMessages(again.url);
    assert.deepEqual(stored.map((m) => [m.content, m.author]), expected, 'the database has each message once');
    await B.screenshot(alice, '3-restart-back-alice');

    // a graceful stop (SIGTERM, as in a deploy) is a restart like any other for the page
    await again.stop({ signal: 'SIGTERM' });
    await B.waitStatus(alice, 'reconnecting', 20000);
    const third = await server.start({ db, port, extraArgs: ctx.serverArgs });
    ctx.srv = third;
    await B.waitStatus(alice, 'connected', 20000);
    await B.typeAndSend(alice, 'after a graceful restart');
    await B.waitMessage(bob, 'after a graceful restart', 20000);
    assert.deepEqual(
      (await B.shownMessages(bob)).map((m) => m.text),
      [...expected.map(([t]) => t), 'after a graceful restart'],
      'still each message once, in order',
    );

    assert.deepEqual(B.problems(alice, NETWORK_ERRORS), [], 'no other errors on Alice\'s page');
    assert.deepEqual(B.problems(bob, NETWORK_ERRORS), [], 'no other errors on Bob\'s page');
  });
});
