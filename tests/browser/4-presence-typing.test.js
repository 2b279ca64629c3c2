'use strict';
// Scenario 4: who is online, "X joined/left", "X is typing…" appear on the other page and go
// away when that person stops or leaves; a rename shows too.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');

const people = (page) => page.$$eval('#people > li .person-name', (l) => l.map((e) => e.textContent));
const count = (page) => page.textContent('#online-count');
const typingText = (page) => page.textContent('#typing');
const notices = (page) => page.$$eval('#notices > li', (l) => l.map((e) => e.textContent));

describe('presence and typing', () => {
  const ctx = B.setup();

  it('the other page sees joins, the online list, typing, renames and leaving', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const alice = await B.openChat(ctx.browser, url, { nickname: 'Alice' });
    await B.until(alice, () => document.getElementById('online-count').textContent === '1', null, 'Alice alone online');
    assert.deepEqual(await people(alice), ['Alice']);
    assert.match(await alice.textContent('#people > li'), /\(you\)/);

    // Bob arrives, on a phone
    const bob = await B.openChat(ctx.browser, url, { nickname: 'Bob', viewport: B.PHONE });
    await B.until(alice, () => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === 'Bob joined'), null, '"Bob joined" on Alice\'s page');
    await B.until(alice, () => document.getElementById('online-count').textContent === '2', null, 'two online');
    assert.deepEqual(await people(alice), ['Alice', 'Bob']);
    assert.equal(await alice.textContent('#people-count'), '2');
    await B.until(bob, () => document.getElementById('online-count').textContent === '2', null, 'two online on Bob\'s page');
    assert.deepEqual(await people(bob), ['Alice', 'Bob']);
    assert.equal((await notices(bob)).some((n) => /joined/.test(n)), false, 'Bob is not told that he joined');

    // Bob starts typing: Alice sees it; Bob does not see his own
    await bob.click('#input');
    await bob.keyboard.type('I am writing someth', { delay: 20 });
    await B.until(alice, () => document.getElementById('typing').textContent === 'Bob is typing…', null, '"Bob is typing…"');
    assert.equal(await typingText(bob), '', 'no typing line for yourself');
    await B.screenshot(alice, '4-presence-typing-alice');
    // on the phone the list is behind the "2 online" button
    assert.equal(await bob.isVisible('#people'), false, 'the list is folded away on a phone');
    await bob.click('#people-btn');
    await B.until(bob, () => document.getElementById('people').offsetParent !== null, null, 'the online list to open');
    assert.equal(await bob.getAttribute('#people-btn', 'aria-expanded'), 'true');
    await B.screenshot(bob, '4-presence-list-bob-phone');
    await bob.keyboard.press('Escape');
    await B.until(bob, () => document.getElementById('people').offsetParent === null, null, 'Escape to close the list');

    // Bob empties the box: the typing line goes away
    await bob.fill('#input', '');
    await bob.dispatchEvent('#input', 'input');
    await B.until(alice, () => document.getElementById('typing').textContent === '', null, 'the typing line to clear');

    // Bob sends a message: he is not "typing" any more once it is there
    await bob.click('#input');
    await bob.keyboard.type('here I am', { delay: 20 });
    await B.until(alice, () => document.getElementById('typing').textContent === 'Bob is typing…', null, '"Bob is typing…" again');
    await bob.keyboard.press('Enter');
    await B.waitMessage(alice, 'here I am');
    await B.until(alice, () => document.getElementById('typing').textContent === '', null, 'the typing line to clear after the message');

    // Carol, anonymous, is counted but not listed by name; her typing is not relayed
    const carol = await B.openChat(ctx.browser, url);
    await B.until(alice, () => document.getElementById('online-count').textContent === '3', null, 'three online');
    assert.deepEqual(await people(alice), ['Alice', 'Bob']);
    assert.match(await alice.textContent('#people-note'), /1 more without a name/);

    // Bob renames himself without reconnecting
    await bob.click('#nick-btn');
    await bob.fill('#nick-input', 'Robert');
    await bob.press('#nick-input', 'Enter');
    await B.until(bob, () => document.getElementById('nick-btn').textContent === 'Robert', null, 'Bob renamed');
    await B.until(alice, () => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === 'Bob is now Robert'), null, '"Bob is now Robert"');
    await B.until(alice, () => [...document.querySelectorAll('#people .person-name')].map((e) => e.textContent).join() === 'Alice,Robert', null, 'the list to show Robert');

    // Robert types, then leaves in the middle of it: typing and presence go away
    await bob.click('#input');
    await bob.keyboard.type('bye', { delay: 20 });
    await B.until(alice, () => document.getElementById('typing').textContent === 'Robert is typing…', null, '"Robert is typing…"');
    await bob.context().close();
    await B.until(alice, () => document.getElementById('typing').textContent === '', null, 'typing to clear when Robert leaves', 10000);
    await B.until(alice, () => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === 'Robert left'), null, '"Robert left"');
    await B.until(alice, () => document.getElementById('online-count').textContent === '2', null, 'two online');
    assert.deepEqual(await people(alice), ['Alice']);
    await B.screenshot(alice, '4-presence-left-alice');

    await carol.context().close();
    await B.until(alice, () => document.getElementById('online-count').textContent === '1', null, 'Alice alone again');
    assert.equal(await count(alice), '1');
    assert.deepEqual(B.problems(alice), [], 'no errors on Alice\'s page');
  });
});
