'use strict';
// Scenario 8: the Socket.IO tutorial's step-6 page (io() with no serverOffset: connection state
// recovery is all it has) loses its connection, others chat meanwhile, and it comes back with
// `socket.recovered` and exactly the messages it missed: none twice, none lost. Without
// recovery it would be sent the whole history again and show every message twice.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');
const { fixture, passThrough, openFixture } = require('./fixture-server');

const STEP6 = fixture('tutorial-step6.html');
const items = (page) => page.$$eval('#messages > li', (l) => l.map((li) => li.textContent));

describe('connection state recovery in a browser', () => {
  const ctx = B.setup();
  let front = null;
  after(async () => {
    if (front) await front.close();
  });

  it('the step-6 page recovers after its connection drops and after the Disconnect button', { skip: B.SKIP }, async () => {
    front = await passThrough(ctx.srv.port, STEP6);
    const ours = await B.openChat(ctx.browser, ctx.srv.url, { nickname: 'Alice' });
    const step6 = await openFixture(ctx.browser, front.url);
    await B.typeAndSend(ours, 'one');
    await B.typeAndSend(ours, 'two');
    await B.until(step6, () => document.querySelectorAll('#messages > li').length === 2, null, 'two messages on the step-6 page');

    // The connection drops (as when a phone changes networks); Alice goes on meanwhile.
    await step6.evaluate(() => socket.io.engine.close());
    await B.typeAndSend(ours, 'three, while it was away');
    await B.until(step6, () => socket.connected, null, 'the step-6 page to reconnect');
    assert.equal(await step6.evaluate(() => socket.recovered), true, 'socket.recovered');
    await B.typeAndSend(ours, 'four');
    await B.until(step6, () => document.querySelectorAll('#messages > li').length >= 4, null, 'four messages');
    assert.deepEqual(await items(step6), ['one', 'two', 'three, while it was away', 'four']);

    // Its own Disconnect / Connect button: recovered too (the session is on disk, not only
    // kept for "recoverable" disconnections as Node's in-memory adapter does).
    await step6.click('#toggle-btn');
    await B.until(step6, () => !socket.connected, null, 'the step-6 page to disconnect');
    await B.typeAndSend(ours, 'five, while it was disconnected');
    await step6.click('#toggle-btn');
    await B.until(step6, () => socket.connected, null, 'the step-6 page to connect again');
    assert.equal(await step6.evaluate(() => socket.recovered), true);
    await B.until(step6, () => document.querySelectorAll('#messages > li').length >= 5, null, 'five messages');
    assert.deepEqual(await items(step6), ['one', 'two', 'three, while it was away', 'four', 'five, while it was disconnected']);
    // Nothing more comes: no old message again.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await items(step6)).length, 5);
    await B.screenshot(step6, '8-recovery-step6');
    assert.deepEqual(step6.problems.filter((p) => !/\/favicon\.ico\)$/.test(p)), []);
  });
});
