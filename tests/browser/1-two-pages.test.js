'use strict';
// Scenario 1: two pages; one sends, both show the message once, with its author.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');

describe('two pages', () => {
  const ctx = B.setup();

  it('a message sent on one page shows once on both, with the author and time', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    // Alice comes for the first time: the page asks for a name, she picks one with the keyboard
    const alice = await B.openChat(ctx.browser, url);
    assert.equal(await alice.isVisible('#nick-form'), true, 'a first visit offers to pick a name');
    await alice.fill('#nick-input', '  Alice  ');
    await alice.press('#nick-input', 'Enter');
    await B.until(alice, () => document.getElementById('nick-form').hidden, null, 'the name form to close');
    assert.equal(await alice.textContent('#nick-btn'), 'Alice', 'the name is trimmed and shown');
    assert.equal(await alice.evaluate(() => localStorage.getItem('tidings.nickname')), 'Alice', 'remembered');
    assert.equal(
      await alice.evaluate(() => document.activeElement && document.activeElement.id),
      'input',
      'focus goes back to the message box',
    );

    // Bob picked his name on an earlier visit; his system is in dark mode
    const bob = await B.openChat(ctx.browser, url, { nickname: 'Bob', colorScheme: 'dark' });
    assert.equal(await bob.isVisible('#nick-form'), false, 'no name prompt when a name is remembered');
    assert.equal(await bob.textContent('#nick-btn'), 'Bob');

    const text = 'Hello from Alice, shown on both pages';
    await B.typeAndSend(alice, text);
    assert.equal(await alice.inputValue('#input'), '', 'the box is cleared');
    await B.waitMessage(alice, text);
    await B.waitMessage(bob, text);

    // Bob answers; once his answer is on both pages, Alice's message cannot still be on its way
    const reply = 'Hi Alice, Bob here';
    await B.typeAndSend(bob, reply);
    await B.waitMessage(alice, reply);
    await B.waitMessage(bob, reply);
    await B.until(alice, () => document.querySelectorAll('#outbox > li').length === 0, null, 'the outbox to empty');
    await B.until(bob, () => document.querySelectorAll('#outbox > li').length === 0, null, 'the outbox to empty');

    for (const [who, page] of [['Alice', alice], ['Bob', bob]]) {
      const shown = await B.shownMessages(page);
      assert.deepEqual(
        shown.map((m) => [m.text, m.author]),
        [
          [text, 'Alice'],
          [reply, 'Bob'],
        ],
        `${who}'s page shows each message once, with its author`,
      );
      B.checkOrder(assert, shown);
      for (const m of shown) assert.match(m.time, /^\d\d:\d\d$/, `${who}'s page shows the time of ${m.text}`);
      assert.deepEqual(
        shown.map((m) => m.mine),
        [who === 'Alice', who === 'Bob'],
        `${who}'s own message is marked as theirs`,
      );
      // the tutorial's skeleton: one li per message whose text contains the content
      const lis = await page.$$eval('#messages > li', (l) => l.map((li) => li.textContent));
      assert.equal(lis.length, 2);
      assert.ok(lis[0].includes(text) && lis[1].includes(reply));
    }

    // both are listed as online on both pages
    for (const page of [alice, bob]) {
      await B.until(page, () => [...document.querySelectorAll('#people .person-name')].map((e) => e.textContent).join() === 'Alice,Bob', null, 'Alice and Bob online');
      assert.equal(await page.textContent('#online-count'), '2');
    }

    await B.screenshot(alice, '1-two-pages-alice');
    await B.screenshot(bob, '1-two-pages-bob');
    assert.deepEqual(B.problems(alice), [], 'no errors on Alice\'s page');
    assert.deepEqual(B.problems(bob), [], 'no errors on Bob\'s page');
  });
});
