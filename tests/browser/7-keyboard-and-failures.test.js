'use strict';
// Beyond the six scenarios: the page used with the keyboard only, a rejected message (failed,
// with the reason, Retry and Discard), rate limiting (held back, then sent by itself, in order)
// and going offline on purpose with the Disconnect button.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');

const focused = (page) =>
  page.evaluate(() => {
    const e = document.activeElement;
    const style = getComputedStyle(e);
    return {
      id: e.id,
      text: e.textContent.trim(),
      className: e.className,
      outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
    };
  });

describe('keyboard, failures, rate limit', () => {
  // one message per second after a burst of two; messages of at most 100 bytes
  const ctx = B.setup({ serverArgs: ['--rate-limit', '1', '--rate-burst', '2', '--max-message-bytes', '100'] });

  it('works with the keyboard alone, shows failures and rides out the rate limit', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const page = await B.openChat(ctx.browser, url);

    // the skip link comes first and leads to the message box
    await page.mouse.click(3, 3); // the page background: Tab starts from the top
    await page.keyboard.press('Tab');
    let f = await focused(page);
    assert.equal(f.className, 'skip-link');
    assert.ok((await page.locator('.skip-link').boundingBox()).y >= 0, 'the skip link shows when focused');
    assert.ok(f.outline, 'focus is visible');
    await page.keyboard.press('Enter');
    await B.until(page, () => document.activeElement.id === 'input', null, 'the skip link to focus the message box');

    // pick a name: Shift+Tab to the name button, Enter, type, Enter
    await page.keyboard.press('Shift+Tab');
    f = await focused(page);
    assert.equal(f.id, 'nick-btn');
    assert.ok(f.outline, 'focus is visible on the name button');
    await page.keyboard.press('Enter'); // the form is already open on a first visit: this closes it
    await page.keyboard.press('Enter'); // and this opens it again, focused on the name field
    await B.until(page, () => document.activeElement.id === 'nick-input', null, 'the name field focused');
    await page.keyboard.type('x'.repeat(33));
    await page.keyboard.press('Enter');
    assert.match(await page.textContent('#nick-error'), /at most 32 characters/, 'a too-long name is refused on the page');
    await page.keyboard.press('Control+A');
    await page.keyboard.type('Kay');
    await page.keyboard.press('Enter');
    await B.until(page, () => document.getElementById('nick-btn').textContent === 'Kay', null, 'the name saved');
    assert.equal((await focused(page)).id, 'input', 'back in the message box');

    // Tab reaches Send, with a visible focus ring
    await page.keyboard.press('Tab');
    f = await focused(page);
    assert.equal(f.text, 'Send');
    assert.ok(f.outline, 'focus is visible on Send');
    await page.keyboard.press('Shift+Tab');

    // five quick messages: the server allows two at once, then one a second
    const texts = ['one', 'two', 'three', 'four', 'five'].map((w) => `rate ${w}`);
    for (const t of texts) {
      await page.keyboard.type(t);
      await page.keyboard.press('Enter');
    }
    await B.until(page, () => [...document.querySelectorAll('#outbox .msg-state')].some((e) => /^Slow down — sending again in \d+ s$/.test(e.textContent)), null, 'a message held back by the rate limit');
    await B.screenshot(page, '7-rate-limited');
    await B.until(page, () => document.querySelectorAll('#outbox > li').length === 0, null, 'every message delivered', 20000);
    let shown = await B.shownMessages(page);
    assert.deepEqual(shown.map((m) => m.text), texts, 'each once, in the order typed');
    B.checkOrder(assert, shown);

    // a message the server rejects: failed, with the reason, Retry and Discard
    const long = `too long: ${'x'.repeat(120)}`;
    await page.keyboard.type(long);
    await page.keyboard.press('Enter');
    await B.until(page, () => document.querySelector('#outbox > li.failed'), null, 'the message marked as failed');
    const [failed] = await B.pendingMessages(page);
    assert.equal(failed.text, long);
    assert.match(failed.state, /^Not sent: content is 130 bytes, the limit is 100/);
    assert.deepEqual(
      await page.$$eval('#outbox > li.failed button', (b) => b.map((e) => e.textContent)),
      ['Retry', 'Discard'],
    );
    await B.screenshot(page, '7-failed');
    // Retry with the keyboard: sent again, refused again
    await page.keyboard.press('Shift+Tab'); // the name button
    await page.keyboard.press('Shift+Tab'); // Discard
    await page.keyboard.press('Shift+Tab'); // Retry
    f = await focused(page);
    assert.equal(f.text, 'Retry');
    assert.ok(f.outline, 'focus is visible on Retry');
    await page.keyboard.press('Enter');
    await B.until(page, () => document.querySelector('#outbox > li.failed'), null, 'failed again');
    // Discard with the keyboard
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Shift+Tab');
    f = await focused(page);
    assert.equal(f.text, 'Discard');
    await page.keyboard.press('Enter');
    await B.until(page, () => document.querySelectorAll('#outbox > li').length === 0, null, 'the failed message discarded');
    assert.equal((await focused(page)).id, 'input');

    // go offline on purpose: the status says so; a message waits and goes when back online
    await page.focus('#toggle-btn');
    await page.keyboard.press('Enter');
    await B.waitStatus(page, 'offline');
    assert.equal(await page.textContent('#status-text'), 'Offline');
    assert.equal(await page.textContent('#toggle-btn'), 'Connect');
    await page.focus('#input');
    await page.keyboard.type('sent after going back online');
    await page.keyboard.press('Enter');
    assert.match((await B.pendingMessages(page))[0].state, /Waiting for the connection/);
    assert.equal(await page.textContent('#status-text'), 'Offline · 1 unsent');
    await B.screenshot(page, '7-offline');
    await page.focus('#toggle-btn');
    await page.keyboard.press('Enter');
    await B.waitStatus(page, 'connected');
    await B.waitMessage(page, 'sent after going back online');
    shown = await B.shownMessages(page);
    assert.deepEqual(shown.map((m) => m.text), [...texts, 'sent after going back online']);

    const stored = await B.storedMessages(url);
    assert.deepEqual(stored.map((m) => m.content), [...texts, 'sent after going back online'], 'stored once each');
    assert.deepEqual(B.problems(page), [], 'no errors on the page');
  });
});
