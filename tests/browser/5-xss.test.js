'use strict';
// Scenario 5: HTML in a message (or in a name) is shown as text and runs nothing.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');

const EVIL = '<img src=x onerror=alert(1)>';
const EVIL_2 = '<script>alert(2)</script><b onmouseover="alert(3)">bold?</b><iframe src="javascript:alert(4)"></iframe>';
const EVIL_NAME = '<img src=y onerror=alert(5)>';

describe('safe rendering', () => {
  const ctx = B.setup();

  it('<img src=x onerror=alert(1)> is shown as text and runs nothing, on every page', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const alice = await B.openChat(ctx.browser, url, { nickname: 'Alice' });
    const bob = await B.openChat(ctx.browser, url, { nickname: 'Bob' });

    // the page is served with a strict Content-Security-Policy, and works under it
    const csp = alice.response.headers()['content-security-policy'] || '';
    assert.match(csp, /script-src 'self'/, `CSP: ${csp}`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `CSP: ${csp}`);
    // its stylesheet is applied (no inline style needed)
    assert.notEqual(
      await alice.evaluate(() => getComputedStyle(document.querySelector('.app')).display),
      'block',
      '/style.css is applied',
    );

    await B.typeAndSend(alice, EVIL);
    // and from a socket.io client: more markup, and markup as the author name
    const mallory = B.client(url, { auth: { serverOffset: 0, nickname: EVIL_NAME } });
    await B.connected(mallory);
    await B.send(mallory, EVIL_2, 'evil-2', { author: EVIL_NAME });
    // a plain message after them: once it is shown, the others have been rendered
    await B.send(mallory, 'the end', 'evil-3', { author: 'Mallory' });

    for (const [who, page] of [['Alice', alice], ['Bob', bob]]) {
      await B.waitMessage(page, 'the end');
      const shown = await B.shownMessages(page);
      assert.deepEqual(
        shown.map((m) => [m.text, m.author]),
        [
          [EVIL, 'Alice'],
          [EVIL_2, EVIL_NAME],
          ['the end', 'Mallory'],
        ],
        `${who}'s page shows the markup as text`,
      );
      const injected = await page.evaluate(() =>
        [...document.querySelectorAll('#messages img, #messages script, #messages b, #messages iframe, #people img, #notices img')].map((e) => e.outerHTML),
      );
      assert.deepEqual(injected, [], `${who}'s page has no element made from message text`);
      // the name shows as text in the online list too
      await B.until(page, (n) => [...document.querySelectorAll('#people .person-name')].some((e) => e.textContent === n), EVIL_NAME, 'the markup name in the online list');
    }
    // Mallory leaves: "… left" with the name as text
    mallory.disconnect();
    await B.until(alice, (n) => [...document.querySelectorAll('#notices > li')].some((e) => e.textContent === `${n} left`), EVIL_NAME, 'the leave notice');

    // images that failed to load would have fired onerror by now; make sure nothing ran
    await alice.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 100))));
    await B.screenshot(alice, '5-xss-alice');
    for (const [who, page] of [['Alice', alice], ['Bob', bob]]) {
      assert.deepEqual(page.dialogs, [], `no dialog opened on ${who}'s page`);
      assert.deepEqual(B.problems(page), [], `no errors and no CSP violation reports on ${who}'s page`);
    }
  });
});
