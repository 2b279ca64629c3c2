'use strict';
// Scenario 6: the Socket.IO tutorial's own step-8 page, unmodified, chats with our page.
//
// The fixture has an inline script, which our server's CSP rightly blocks, and it connects with
// io() to its own origin. So a tiny local server serves it, byte for byte, at `/` and passes
// everything else (socket.io.js, long-polling, the WebSocket upgrade) through to tidings
// untouched: the page talks to our server exactly as if our server had served it.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');
const { fixture, passThrough, openFixture } = require('./fixture-server');

const TUTORIAL = fixture('tutorial-index.html');

function tutorialServer(port) {
  return passThrough(port, TUTORIAL);
}

async function openTutorial(browser, url) {
  const page = await openFixture(browser, url);
  assert.equal(await page.content().then((html) => html.includes('const clientOffset = `${socket.id}-${counter++}`')), true, 'the tutorial page');
  return page;
}

const tutorialItems = (page) => page.$$eval('#messages > li', (l) => l.map((li) => li.textContent));

describe('the tutorial page', () => {
  const ctx = B.setup();
  let front = null;
  after(async () => {
    if (front) await front.close();
  });

  it('the unmodified tutorial page and our page exchange messages', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    front = await tutorialServer(ctx.srv.port);
    const ours = await B.openChat(ctx.browser, url, { nickname: 'Alice' });
    await B.typeAndSend(ours, 'first, from the tidings page');
    await B.waitMessage(ours, 'first, from the tidings page');

    const tutorial = await openTutorial(ctx.browser, front.url);
    // it upgrades to a WebSocket through the pass-through, as it would with tidings alone
    await B.until(tutorial, () => socket.io.engine && socket.io.engine.transport.name === 'websocket', null, 'the WebSocket upgrade');
    // it replays the history (serverOffset 0) and shows the content (meta is ignored)
    await B.until(tutorial, () => document.querySelectorAll('#messages > li').length === 1, null, 'the history on the tutorial page');
    assert.deepEqual(await tutorialItems(tutorial), ['first, from the tidings page']);

    // the tutorial page sends (content, `${socket.id}-${counter}`), no author
    await tutorial.fill('#input', 'hello from the tutorial page');
    await tutorial.press('#input', 'Enter');
    await B.waitMessage(ours, 'hello from the tutorial page');
    await B.until(tutorial, () => document.querySelectorAll('#messages > li').length === 2, null, 'its own message on the tutorial page');

    await B.typeAndSend(ours, 'hi tutorial, from tidings');
    await B.until(tutorial, () => document.querySelectorAll('#messages > li').length === 3, null, 'our answer on the tutorial page');
    assert.deepEqual(await tutorialItems(tutorial), [
      'first, from the tidings page',
      'hello from the tutorial page',
      'hi tutorial, from tidings',
    ]);

    // its Disconnect / Connect button: a message typed while disconnected is sent on connect
    await tutorial.click('#toggle-btn');
    await B.until(tutorial, () => !socket.connected, null, 'the tutorial page to disconnect');
    await tutorial.fill('#input', 'typed while the tutorial page was disconnected');
    await tutorial.press('#input', 'Enter');
    await tutorial.click('#toggle-btn');
    await B.waitMessage(ours, 'typed while the tutorial page was disconnected');

    await B.typeAndSend(ours, 'the last word');
    await B.waitMessage(ours, 'the last word');
    const shown = await B.shownMessages(ours);
    assert.deepEqual(shown.map((m) => [m.text, m.author]), [
      ['first, from the tidings page', 'Alice'],
      ['hello from the tutorial page', 'anonymous'],
      ['hi tutorial, from tidings', 'Alice'],
      ['typed while the tutorial page was disconnected', 'anonymous'],
      ['the last word', 'Alice'],
    ]);
    B.checkOrder(assert, shown);
    // the tutorial page (which reconnects with its last offset) shows each message once too
    await B.until(tutorial, () => document.querySelectorAll('#messages > li').length === 5, null, 'five messages on the tutorial page');
    assert.deepEqual(await tutorialItems(tutorial), shown.map((m) => m.text));

    await B.screenshot(tutorial, '6-tutorial-page');
    await B.screenshot(ours, '6-tutorial-ours');
    assert.deepEqual(B.problems(ours), [], 'no errors on our page');
    assert.deepEqual(tutorial.problems.filter((p) => !/\/favicon\.ico\)$/.test(p)), [], 'no errors on the tutorial page');
  });
});
