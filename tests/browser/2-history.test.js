'use strict';
// Scenario 2: a reload keeps the history; a fresh page shows the latest 50 messages and loads
// older ones when scrolled to the top, each once and in order.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');

const SEEDED = 120;
const seedText = (i) => `seed message ${String(i).padStart(3, '0')}`;
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Scrolls #scroller to the very top, as a user dragging it up would. Resolves with where the
 * first message shown then is (its top, relative to the scroller), before anything is loaded.
 */
const scrollToTop = (page) =>
  page.evaluate(() => {
    const s = document.getElementById('scroller');
    s.scrollTop = 0;
    const first = document.querySelector('#messages > li');
    const at = first ? { id: Number(first.getAttribute('data-id')), top: first.getBoundingClientRect().top - s.getBoundingClientRect().top } : null;
    s.dispatchEvent(new Event('scroll'));
    return at;
  });

describe('history', () => {
  const ctx = B.setup();

  it('a fresh page shows the latest 50; scrolling up loads older pages; a reload keeps it all', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    // 120 messages from socket.io clients: some with an author, some anonymous
    const seeder = B.client(url, { auth: { serverOffset: 0, nickname: 'Seeder' } });
    await B.connected(seeder);
    for (let i = 1; i <= SEEDED; i++) {
      const meta = i % 3 === 0 ? undefined : { author: i % 3 === 1 ? 'Ada' : 'Grace' };
      const ack = await B.send(seeder, seedText(i), `seed-${i}`, meta);
      assert.equal(ack.id, i, `seed ${i} stored as id ${i}: ${JSON.stringify(ack)}`);
    }
    seeder.disconnect();

    const page = await B.openChat(ctx.browser, url, { nickname: 'Reader' });
    await B.waitMessage(page, seedText(SEEDED));
    // 50 messages overflow the page, so it does not load older ones by itself
    await B.until(page, () => {
      const s = document.getElementById('scroller');
      return s.scrollHeight > s.clientHeight * 1.5;
    }, null, 'the messages to overflow the page');
    let shown = await B.shownMessages(page);
    assert.deepEqual(
      shown.map((m) => m.id),
      range(SEEDED - 49, SEEDED),
      'a fresh page shows only the latest 50 (auth.latest), in order',
    );
    assert.deepEqual(
      shown.map((m) => m.text),
      range(SEEDED - 49, SEEDED).map(seedText),
    );
    assert.equal(shown.find((m) => m.id === 70 + 1).author, 'Grace');
    assert.equal(shown.find((m) => m.id === 72).author, 'anonymous', 'no author shows as anonymous');
    // the newest message is in view (the page starts at the bottom)
    assert.ok(await isInView(page, SEEDED), 'the newest message is visible');
    assert.equal(await page.isVisible('#older-btn'), true, 'a "Load older messages" button for the keyboard');
    await B.screenshot(page, '2-history-latest');

    // scroll to the top: the next 50 go in above, and what was on screen stays where it was
    const before = await scrollToTop(page);
    assert.equal(before.id, SEEDED - 49);
    await B.until(page, () => document.querySelectorAll('#messages > li').length >= 100, null, '100 messages after one scroll to the top');
    shown = await B.shownMessages(page);
    assert.deepEqual(shown.map((m) => m.id), range(SEEDED - 99, SEEDED), 'ids 21..120, in order, once each');
    B.checkOrder(assert, shown);
    const topAfter = await topOf(page, SEEDED - 49);
    assert.ok(Math.abs(topAfter - before.top) < 2, `message 71 stays where it was (top ${before.top} → ${topAfter})`);
    await B.screenshot(page, '2-history-older');

    // and again, up to the first message: the beginning of the conversation
    await scrollToTop(page);
    await B.until(page, () => document.querySelectorAll('#messages > li').length >= 120, null, 'all 120 messages');
    await B.until(page, () => !document.getElementById('history-note').hidden, null, 'the "beginning" note');
    shown = await B.shownMessages(page);
    assert.deepEqual(shown.map((m) => m.id), range(1, SEEDED), 'ids 1..120 once each, in order');
    assert.deepEqual(shown.map((m) => m.text), range(1, SEEDED).map(seedText));
    assert.match(await page.textContent('#history-note'), /beginning of the conversation/);
    assert.equal(await page.isVisible('#older-btn'), false, 'nothing older to load');
    await scrollToTop(page);
    await B.screenshot(page, '2-history-beginning');

    // a new message arrives while the reader is up in the history: no jump, a "new messages" button
    const other = B.client(url, { auth: { serverOffset: SEEDED } });
    await B.connected(other);
    await B.send(other, 'while you were reading', 'live-1', { author: 'Ada' });
    await B.waitMessage(page, 'while you were reading');
    assert.equal(await page.evaluate(() => document.getElementById('scroller').scrollTop < 400), true, 'no auto-scroll away from what the reader reads');
    await B.until(page, () => !document.getElementById('jump-btn').hidden, null, 'the "new messages" button');
    await page.click('#jump-btn');
    await B.until(page, () => {
      const s = document.getElementById('scroller');
      return s.scrollHeight - s.scrollTop - s.clientHeight < 5;
    }, null, 'the jump to the bottom');
    other.disconnect();

    // the reader writes; then reloads: the latest 50 again, including what they wrote
    await B.typeAndSend(page, 'my own message before the reload');
    await B.waitMessage(page, 'my own message before the reload');
    await page.reload({ waitUntil: 'load' });
    await B.waitStatus(page, 'connected');
    await B.waitMessage(page, 'my own message before the reload');
    await B.until(page, () => document.querySelectorAll('#messages > li').length >= 50, null, '50 messages after the reload');
    shown = await B.shownMessages(page);
    assert.deepEqual(shown.map((m) => m.id), range(SEEDED + 2 - 49, SEEDED + 2), 'after a reload: the latest 50, in order');
    assert.deepEqual(shown.slice(-2).map((m) => [m.text, m.author]), [
      ['while you were reading', 'Ada'],
      ['my own message before the reload', 'Reader'],
    ]);
    assert.equal(shown.at(-1).mine, true);

    // the stored history is intact and has each message once
    const stored = await B.storedMessages(url);
    assert.equal(stored.length, SEEDED + 2);
    assert.deepEqual(stored.map((m) => m.id), range(1, SEEDED + 2));
    assert.deepEqual(B.problems(page), [], 'no errors on the page');
  });
});

/** The message's top edge relative to the scroller's top, in px. */
function topOf(page, id) {
  return page.evaluate((i) => {
    const li = document.querySelector(`#messages > li[data-id="${i}"]`);
    return li.getBoundingClientRect().top - document.getElementById('scroller').getBoundingClientRect().top;
  }, id);
}

function isInView(page, id) {
  return page.evaluate((i) => {
    const li = document.querySelector(`#messages > li[data-id="${i}"]`);
    const r = li.getBoundingClientRect();
    const s = document.getElementById('scroller').getBoundingClientRect();
    return r.top >= s.top - 1 && r.bottom <= s.bottom + 1;
  }, id);
}
