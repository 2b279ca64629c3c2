'use strict';
// Scenario 9: rooms. Pages in different rooms see only their room's messages; the room in the
// URL (#dev) opens it; unread counts; switching rooms shows every message once, in order (also
// what was sent while the page joined); presence and typing of the room in view only; scroll
// position, pending messages and drafts survive a switch; a reload keeps the rooms; leaving;
// names checked on the page and the server's refusals shown.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const B = require('./browser');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The list of rooms: [{ name, current, badge }]. */
const roomList = (page) =>
  page.$$eval('#rooms .room-link', (links) =>
    links.map((a) => ({
      name: a.querySelector('.room-name').textContent,
      current: a.getAttribute('aria-current') === 'page',
      badge: a.querySelector('.room-badge').textContent,
    })),
  );
const viewed = (page) => page.textContent('#room-name');
const texts = async (page) => (await B.shownMessages(page)).map((m) => m.text);
const people = (page) => page.$$eval('#people > li .person-name', (l) => l.map((e) => e.textContent));
const notices = (page) => page.$$eval('#notices > li', (l) => l.map((e) => e.textContent));

function waitRoom(page, name, timeoutMs) {
  return B.until(page, (n) => document.getElementById('room-name').textContent === n && location.hash === `#${n}`, name, `room #${name} in view (and in the URL)`, timeoutMs);
}

/** Waits until the room is in the list and joined (no "joining…" badge). */
function waitJoined(page, name) {
  return B.until(
    page,
    (n) => [...document.querySelectorAll('#rooms .room-link')].some((a) => a.dataset.room === n && !/joining|not joined/.test(a.querySelector('.room-badge').textContent)),
    name,
    `#${name} joined`,
  );
}

/** Clicks a room in the list, as a user would. */
async function openRoom(page, name) {
  await page.click(`#rooms .room-link[data-room="${name}"]`);
  await waitRoom(page, name);
}

/** Joins (or creates) a room with the "+ Join" form. */
async function joinWithForm(page, name) {
  await page.click('#join-btn');
  await B.until(page, () => document.activeElement.id === 'join-input', null, 'the room name field focused');
  await page.keyboard.type(name);
  await page.keyboard.press('Enter');
}

/** Scrolls to the top until the page says it shows the beginning of the room. */
async function loadToBeginning(page) {
  for (let i = 0; i < 20; i++) {
    const done = await page.evaluate(() => {
      if (!document.getElementById('history-note').hidden) return true;
      const s = document.getElementById('scroller');
      s.scrollTop = 0;
      s.dispatchEvent(new Event('scroll'));
      return false;
    });
    if (done) return;
    await sleep(150);
  }
  throw new Error('the beginning of the room was never reached');
}

/** Every stored message of `room`, oldest first, read with `history` pages. */
async function roomHistory(url, room) {
  const socket = B.client(url, { auth: { rooms: [] } });
  try {
    await B.connected(socket);
    const all = [];
    let before = null;
    for (let pages = 0; pages < 100; pages++) {
      const res = await socket.timeout(B.WAIT_MS).emitWithAck('history', { room, before, limit: 200 });
      if (!res || !Array.isArray(res.messages)) throw new Error(`history answered ${JSON.stringify(res)}`);
      all.unshift(...res.messages);
      if (!res.hasMore || res.messages.length === 0) return all;
      before = res.messages[0].id;
    }
    throw new Error('history never ended');
  } finally {
    socket.disconnect();
  }
}

/** A socket.io client in `rooms`, ready. */
async function member(url, rooms, nickname) {
  const auth = { serverOffset: 0, rooms };
  if (nickname) auth.nickname = nickname;
  const socket = B.client(url, { auth });
  await B.connected(socket);
  return socket;
}

async function sendTo(socket, room, content, author) {
  const ack = await B.send(socket, content, `${room}-${content}`, { author, room });
  assert.ok(Number.isSafeInteger(ack.id), `${content} stored in #${room}: ${JSON.stringify(ack)}`);
  return ack.id;
}

describe('rooms', () => {
  const ctx = B.setup();

  it('pages in different rooms see only their room; #dev in the URL; unread counts; a switch shows all once', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    // Alice follows a link to #dev on her first visit: she is in the default room and in dev
    const alice = await B.openChat(ctx.browser, url, { nickname: 'Alice', path: '/#dev' });
    await waitRoom(alice, 'dev');
    await waitJoined(alice, 'dev');
    assert.deepEqual(await roomList(alice), [
      { name: 'dev', current: true, badge: '' },
      { name: 'general', current: false, badge: '' },
    ]);
    // Bob comes without a link: the default room
    const bob = await B.openChat(ctx.browser, url, { nickname: 'Bob' });
    await waitRoom(bob, 'general');
    assert.deepEqual((await roomList(bob)).map((r) => r.name), ['general']);

    await B.typeAndSend(alice, 'Alice in dev');
    await B.waitMessage(alice, 'Alice in dev');
    await B.until(alice, () => document.querySelectorAll('#outbox > li').length === 0, null, 'the outbox to empty');
    // Bob's own message is stored after Alice's: had hers reached his page, it would be there
    await B.typeAndSend(bob, 'Bob in general 1');
    await B.waitMessage(bob, 'Bob in general 1');
    assert.deepEqual(await texts(bob), ['Bob in general 1'], 'Bob sees only general');
    assert.deepEqual(await texts(alice), ['Alice in dev'], 'Alice, in dev, sees only dev');

    // Bob goes on in general while Alice reads dev: her unread count for general grows
    await B.until(alice, () => document.querySelector('#rooms .room-link[data-room="general"] .room-badge').textContent === '1', null, 'general: 1 unread');
    await B.typeAndSend(bob, 'Bob in general 2');
    await B.typeAndSend(bob, 'Bob in general 3');
    await B.until(alice, () => document.querySelector('#rooms .room-link[data-room="general"] .room-badge').textContent === '3', null, 'general: 3 unread');
    assert.equal(await alice.getAttribute('#rooms .room-link[data-room="general"]', 'aria-label'), 'general, 3 unread');
    assert.deepEqual(await texts(alice), ['Alice in dev'], 'still only dev on screen');
    await B.screenshot(alice, '9-rooms-unread');

    // she opens general: all three, once each, in order; the count is gone; the URL says #general
    await openRoom(alice, 'general');
    const general = await B.shownMessages(alice);
    assert.deepEqual(general.map((m) => m.text), ['Bob in general 1', 'Bob in general 2', 'Bob in general 3']);
    B.checkOrder(assert, general);
    assert.equal(await alice.$eval('#messages > li.first-unread .msg-text', (e) => e.textContent), 'Bob in general 1', 'a "New" line above the first unread message');
    await B.screenshot(alice, '9-rooms-opened');
    assert.deepEqual(await roomList(alice), [
      { name: 'dev', current: false, badge: '' },
      { name: 'general', current: true, badge: '' },
    ]);
    assert.equal(await alice.evaluate(() => document.activeElement.id), 'input', 'the message box has the focus');
    // the stored rooms are as the pages show them
    assert.deepEqual((await roomHistory(url, 'dev')).map((m) => m.content), ['Alice in dev']);
    assert.deepEqual((await roomHistory(url, 'general')).map((m) => m.content), ['Bob in general 1', 'Bob in general 2', 'Bob in general 3']);

    // the browser's Back goes to the room before; a new #hash joins that room
    await alice.goBack();
    await waitRoom(alice, 'dev');
    assert.deepEqual(await texts(alice), ['Alice in dev']);
    await alice.evaluate(() => {
      location.hash = '#random';
    });
    await waitRoom(alice, 'random');
    await waitJoined(alice, 'random');
    assert.deepEqual((await roomList(alice)).map((r) => r.name), ['dev', 'general', 'random']);
    await B.until(alice, () => document.getElementById('empty').textContent === 'No messages yet. Say hello!' && !document.getElementById('empty').hidden, null, 'an empty room says so');

    assert.deepEqual(B.problems(alice), [], 'no errors on Alice\'s page');
    assert.deepEqual(B.problems(bob), [], 'no errors on Bob\'s page');
    await alice.context().close();
    await bob.context().close();
  });

  it('joining a room while others send to it: history and live meet with no gap and no duplicate', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const sender = await member(url, ['ops'], 'Ops');
    const TOTAL = 150;
    const BEFORE = 70; // sent before the page joins: more than one page of history
    for (let i = 1; i <= BEFORE; i++) await sendTo(sender, 'ops', `ops ${i}`, 'Ops');

    const carol = await B.openChat(ctx.browser, url, { nickname: 'Carol' });
    await waitRoom(carol, 'general');
    // ops is in the directory of the join form, with its one member
    await carol.click('#join-btn');
    await B.until(carol, () => [...document.querySelectorAll('#directory .directory-room')].some((b) => b.textContent === '#ops1 online'), null, 'ops in the directory');
    await carol.keyboard.press('Escape');
    await B.until(carol, () => document.getElementById('join-form').hidden, null, 'Escape to close the form');

    // the sender keeps going while Carol joins
    let sending = true;
    const flood = (async () => {
      for (let i = BEFORE + 1; i <= TOTAL; i++) {
        await sendTo(sender, 'ops', `ops ${i}`, 'Ops');
        await sleep(8);
      }
      sending = false;
    })();
    await sleep(60);
    await joinWithForm(carol, 'ops');
    await waitRoom(carol, 'ops');
    assert.ok(sending, 'the page joined while messages were still being sent');
    await flood;
    await B.waitMessage(carol, `ops ${TOTAL}`);
    await loadToBeginning(carol);

    const shown = await B.shownMessages(carol);
    const stored = await roomHistory(url, 'ops');
    assert.equal(stored.length, TOTAL);
    assert.deepEqual(shown.map((m) => m.id), stored.map((m) => m.id), 'every stored id of ops once, in order');
    assert.deepEqual(shown.map((m) => m.text), range(1, TOTAL).map((i) => `ops ${i}`));
    B.checkOrder(assert, shown);
    await B.screenshot(carol, '9-rooms-joined-during-flood');
    assert.deepEqual(B.problems(carol), [], 'no errors on Carol\'s page');
    sender.disconnect();
    await carol.context().close();
  });

  it('presence and typing are those of the room in view', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const alice = await B.openChat(ctx.browser, url, { nickname: 'Alice', path: '/#team' });
    await waitJoined(alice, 'team');
    const bob = await B.openChat(ctx.browser, url, { nickname: 'Bob' }); // general only
    const carol = await B.openChat(ctx.browser, url, { nickname: 'Carol', path: '/#team' }); // general and team
    await waitJoined(carol, 'team');

    await B.until(alice, () => [...document.querySelectorAll('#people .person-name')].map((e) => e.textContent).join() === 'Alice,Carol', null, 'team: Alice and Carol');
    assert.equal(await alice.textContent('#online-count'), '2');
    assert.equal(await alice.textContent('#people-room'), 'in #team');

    // Bob types in general: not shown in team; Carol types in team: shown
    await bob.click('#input');
    await bob.keyboard.type('hello gen', { delay: 20 });
    await sleep(400);
    await carol.click('#input');
    await carol.keyboard.type('hello tea', { delay: 20 });
    await B.until(alice, () => document.getElementById('typing').textContent === 'Carol is typing…', null, '"Carol is typing…" in team');
    await B.screenshot(alice, '9-rooms-typing-team');

    // in general: Bob, Carol and Alice; Bob is typing there (he goes on), Carol is not
    await bob.keyboard.type('eral', { delay: 20 });
    await openRoom(alice, 'general');
    await B.until(alice, () => [...document.querySelectorAll('#people .person-name')].map((e) => e.textContent).join() === 'Alice,Bob,Carol', null, 'general: Alice, Bob and Carol');
    await B.until(alice, () => document.getElementById('typing').textContent === 'Bob is typing…', null, '"Bob is typing…" in general');
    assert.equal(await alice.textContent('#online-count'), '3');

    // Dan comes to team only: Alice, reading general, is not told; Eve comes to general: she is
    const dan = await member(url, ['team'], 'Dan');
    await sleep(1500); // a presence tick for team goes by
    const eve = await member(url, ['general'], 'Eve');
    await B.until(alice, () => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === 'Eve joined'), null, '"Eve joined" in general');
    assert.equal((await notices(alice)).some((n) => /Dan/.test(n)), false, 'no notice about team in general');
    assert.deepEqual(await people(alice), ['Alice', 'Bob', 'Carol', 'Eve']);
    await openRoom(alice, 'team');
    await B.until(alice, () => [...document.querySelectorAll('#people .person-name')].map((e) => e.textContent).join() === 'Alice,Carol,Dan', null, 'team: Alice, Carol and Dan');
    dan.disconnect();
    eve.disconnect();
    for (const page of [alice, bob, carol]) {
      assert.deepEqual(B.problems(page), []);
      await page.context().close();
    }
  });

  it('a switch keeps the scroll position, pending messages and drafts; a reload keeps the rooms; leaving', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const seeder = await member(url, ['lobby'], 'Seeder');
    for (let i = 1; i <= 80; i++) await sendTo(seeder, 'lobby', `lobby ${String(i).padStart(2, '0')}`, 'Seeder');

    const dora = await B.openChat(ctx.browser, url, { nickname: 'Dora', path: '/#lobby' });
    await waitJoined(dora, 'lobby');
    await B.waitMessage(dora, 'lobby 80');
    await joinWithForm(dora, 'quiet');
    await waitJoined(dora, 'quiet');
    await openRoom(dora, 'lobby');

    // read up in lobby: the first message in view stays where it was across a switch
    const mark = await dora.evaluate(() => {
      const s = document.getElementById('scroller');
      s.scrollTop = Math.max(200, Math.floor(s.scrollHeight / 3));
      s.dispatchEvent(new Event('scroll'));
      const top = s.getBoundingClientRect().top;
      const li = [...document.querySelectorAll('#messages > li')].find((l) => l.getBoundingClientRect().bottom > top);
      return { id: li.getAttribute('data-id'), top: li.getBoundingClientRect().top - top, scrollTop: s.scrollTop };
    });
    await openRoom(dora, 'quiet');
    await seeder.emit('chat message', 'lobby 81, while Dora is away', 'lobby-81', { author: 'Seeder', room: 'lobby' });
    await B.until(dora, () => document.querySelector('#rooms .room-link[data-room="lobby"] .room-badge').textContent === '1', null, 'lobby: 1 unread');
    await openRoom(dora, 'lobby');
    const back = await dora.evaluate((id) => {
      const s = document.getElementById('scroller');
      const li = document.querySelector(`#messages > li[data-id="${id}"]`);
      return li.getBoundingClientRect().top - s.getBoundingClientRect().top;
    }, mark.id);
    assert.ok(Math.abs(back - mark.top) < 2, `message ${mark.id} is where it was (top ${mark.top} → ${back})`);
    assert.equal(await dora.isVisible('#jump-btn'), true, 'a "new message" button for what came meanwhile');

    // offline: a message typed in each room waits in that room's outbox only
    await dora.click('#toggle-btn');
    await B.waitStatus(dora, 'offline');
    await B.typeAndSend(dora, 'pending in lobby');
    await openRoom(dora, 'quiet');
    assert.deepEqual(await B.pendingMessages(dora), [], 'lobby\'s pending message is not in quiet');
    await B.typeAndSend(dora, 'pending in quiet');
    await dora.fill('#input', 'a draft in quiet');
    await openRoom(dora, 'lobby');
    assert.equal(await dora.inputValue('#input'), '', 'lobby has no draft');
    assert.deepEqual((await B.pendingMessages(dora)).map((p) => p.text), ['pending in lobby']);
    assert.match((await B.pendingMessages(dora))[0].state, /Waiting for the connection/);
    assert.equal(await dora.textContent('#status-text'), 'Offline · 2 unsent');
    await openRoom(dora, 'quiet');
    assert.deepEqual((await B.pendingMessages(dora)).map((p) => p.text), ['pending in quiet']);
    assert.equal(await dora.inputValue('#input'), 'a draft in quiet', 'the draft is kept');
    await B.screenshot(dora, '9-rooms-pending');

    // back online: each is delivered once, to its room
    await dora.click('#toggle-btn');
    await B.waitStatus(dora, 'connected');
    await B.waitMessage(dora, 'pending in quiet');
    assert.deepEqual(await texts(dora), ['pending in quiet']);
    await openRoom(dora, 'lobby');
    await B.waitMessage(dora, 'pending in lobby');
    await B.until(dora, () => document.querySelectorAll('#outbox > li').length === 0, null, 'nothing pending');
    assert.deepEqual((await roomHistory(url, 'quiet')).map((m) => m.content), ['pending in quiet']);
    assert.deepEqual((await roomHistory(url, 'lobby')).slice(-2).map((m) => m.content), ['lobby 81, while Dora is away', 'pending in lobby']);

    // a reload keeps the rooms and the room in view
    await dora.reload({ waitUntil: 'load' });
    await B.waitStatus(dora, 'connected');
    await waitRoom(dora, 'lobby');
    await B.waitMessage(dora, 'pending in lobby');
    assert.deepEqual((await roomList(dora)).map((r) => r.name), ['general', 'lobby', 'quiet']);
    await openRoom(dora, 'quiet');
    await B.waitMessage(dora, 'pending in quiet');

    // leaving quiet: out of the list, the next room in view, nothing more from quiet, and
    // still out after a reload
    await dora.click('#leave-btn');
    await B.until(dora, () => ![...document.querySelectorAll('#rooms .room-link')].some((a) => a.dataset.room === 'quiet'), null, 'quiet out of the list');
    assert.notEqual(await viewed(dora), 'quiet');
    await sleep(300); // the leave reaches the server
    const other = await member(url, ['quiet', 'general'], 'Other');
    await sendTo(other, 'quiet', 'in quiet after Dora left', 'Other');
    await sendTo(other, 'general', 'in general after Dora left', 'Other');
    await openRoom(dora, 'general');
    await B.waitMessage(dora, 'in general after Dora left');
    assert.equal(await dora.evaluate(() => document.body.textContent.includes('in quiet after Dora left')), false);

    // 30 messages in lobby while Dora reads general: lobby opens at the first of them, under a
    // "New" line, not at the bottom
    for (let i = 1; i <= 30; i++) await sendTo(seeder, 'lobby', `lobby later ${i}`, 'Seeder');
    await B.until(dora, () => document.querySelector('#rooms .room-link[data-room="lobby"] .room-badge').textContent === '30', null, 'lobby: 30 unread');
    await openRoom(dora, 'lobby');
    const firstNew = await dora.evaluate(() => {
      const li = document.querySelector('#messages > li.first-unread');
      const s = document.getElementById('scroller');
      return { text: li.querySelector('.msg-text').textContent, top: li.getBoundingClientRect().top - s.getBoundingClientRect().top };
    });
    assert.equal(firstNew.text, 'lobby later 1');
    assert.ok(firstNew.top >= 0 && firstNew.top < 60, `the first new message at the top of the view (${firstNew.top})`);
    assert.equal(await dora.isVisible('#jump-btn'), true, 'a button down to the newest');
    await B.screenshot(dora, '9-rooms-new-line');
    await dora.reload({ waitUntil: 'load' });
    await B.waitStatus(dora, 'connected');
    await waitRoom(dora, 'lobby');
    assert.deepEqual((await roomList(dora)).map((r) => r.name), ['general', 'lobby']);
    assert.deepEqual(JSON.parse(await dora.evaluate(() => localStorage.getItem('tidings.rooms'))).joined.sort(), ['general', 'lobby']);
    other.disconnect();
    seeder.disconnect();
    assert.deepEqual(B.problems(dora), [], 'no errors on Dora\'s page');
    await dora.context().close();
  });

  it('rooms with the keyboard alone: join, move between rooms, leave', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const page = await B.openChat(ctx.browser, url, { nickname: 'Kim' });
    await waitRoom(page, 'general');
    const focused = () =>
      page.evaluate(() => {
        const e = document.activeElement;
        const style = getComputedStyle(e);
        return { id: e.id, room: e.dataset.room || null, outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2 };
      });
    // Tab from the top: the skip link, Disconnect, then "+ Join"
    await page.mouse.click(3, 3);
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    let f = await focused();
    assert.equal(f.id, 'join-btn');
    assert.ok(f.outline, 'focus is visible on "+ Join"');
    await page.keyboard.press('Enter');
    await B.until(page, () => document.activeElement.id === 'join-input', null, 'the room name field focused');
    assert.equal(await page.getAttribute('#join-btn', 'aria-expanded'), 'true');
    await page.keyboard.type('keys');
    await page.keyboard.press('Enter');
    await waitJoined(page, 'keys');
    await waitRoom(page, 'keys');
    assert.equal((await focused()).id, 'input', 'back in the message box, in the new room');
    // Alt+↑ / Alt+↓ move between rooms
    await page.keyboard.press('Alt+ArrowDown');
    await waitRoom(page, 'general');
    await page.keyboard.press('Alt+ArrowUp');
    await waitRoom(page, 'keys');
    // Tab reaches the room links, with a visible focus; Enter opens one
    await page.focus('#join-btn');
    await page.keyboard.press('Tab');
    f = await focused();
    assert.equal(f.room, 'general');
    assert.ok(f.outline, 'focus is visible on a room link');
    await page.keyboard.press('Enter');
    await waitRoom(page, 'general');
    // the Leave button follows the room list
    await page.focus('#rooms .room-link[data-room="keys"]');
    await page.keyboard.press('Tab');
    f = await focused();
    assert.equal(f.id, 'leave-btn');
    assert.ok(f.outline, 'focus is visible on Leave');
    assert.equal(await page.getAttribute('#leave-btn', 'aria-label'), 'Leave #general');
    await page.keyboard.press('Enter');
    await waitRoom(page, 'keys');
    assert.deepEqual((await roomList(page)).map((r) => r.name), ['keys']);
    assert.equal((await focused()).id, 'input');
    assert.deepEqual(B.problems(page), []);
    await page.context().close();
  });

  it('on a phone the rooms are behind a button with the unread count', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const page = await B.openChat(ctx.browser, url, { nickname: 'Phil', viewport: B.PHONE, path: '/#mobile' });
    await waitJoined(page, 'mobile');
    assert.equal(await page.isVisible('#rooms'), false, 'the list is folded away on a phone');
    const other = await member(url, ['general'], 'Gus');
    await sendTo(other, 'general', 'for the phone', 'Gus');
    await B.until(page, () => !document.getElementById('rooms-unread').hidden && document.getElementById('rooms-unread').textContent === '1', null, 'the Rooms button counts 1 unread');
    await page.click('#rooms-btn');
    await B.until(page, () => document.getElementById('rooms').offsetParent !== null, null, 'the list to open');
    assert.equal(await page.getAttribute('#rooms-btn', 'aria-expanded'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.dataset.room), 'mobile', 'focus on the room in view');
    await B.screenshot(page, '9-rooms-phone-list');
    await page.click('#rooms .room-link[data-room="general"]');
    await waitRoom(page, 'general');
    assert.equal(await page.isVisible('#rooms'), false, 'the list folds away once a room is picked');
    await B.waitMessage(page, 'for the phone');
    await B.screenshot(page, '9-rooms-phone-general');
    other.disconnect();
    assert.deepEqual(B.problems(page), []);
    await page.context().close();
  });
});

describe('rooms without connection state recovery', () => {
  const ctx = B.setup({ serverArgs: ['--rate-limit', '0', '--recovery-window', '0'] });

  it('a reconnect that replays what history gave shows each message once', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const page = await B.openChat(ctx.browser, url, { nickname: 'Hal' });
    await waitRoom(page, 'general');
    // messages of ops the page is not in: its offset stays below them
    const sender = await member(url, ['ops'], 'Ops');
    for (let i = 1; i <= 10; i++) await sendTo(sender, 'ops', `ops ${i}`, 'Ops');
    await joinWithForm(page, 'ops');
    await waitJoined(page, 'ops');
    await B.waitMessage(page, 'ops 10'); // from history
    // Disconnect, Connect: no recovery, so the server replays ops from the page's offset,
    // ids the page has from history
    await page.click('#toggle-btn');
    await B.waitStatus(page, 'offline');
    // what the server sends, over long-polling (the transport a connection starts on) or the
    // WebSocket it upgrades to
    const replayed = [];
    const collect = (text) => {
      for (const m of String(text).matchAll(/42\["chat message","(ops \d+)"/g)) replayed.push(m[1]);
    };
    page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => collect(payload)));
    page.on('response', (res) => {
      if (/transport=polling/.test(res.url()) && res.request().method() === 'GET') res.text().then(collect, () => {});
    });
    await page.click('#toggle-btn');
    await B.waitStatus(page, 'connected');
    await sendTo(sender, 'ops', 'ops 11', 'Ops');
    await B.waitMessage(page, 'ops 11');
    for (let i = 0; i < 100 && !replayed.includes('ops 11'); i++) await sleep(50); // bodies are read asynchronously
    assert.deepEqual(replayed.sort(), range(1, 11).map((i) => `ops ${i}`).sort(), 'the server did replay what the page had from history');
    const shown = await B.shownMessages(page);
    assert.deepEqual(shown.map((m) => m.text), range(1, 11).map((i) => `ops ${i}`), 'each once, in order');
    B.checkOrder(assert, shown);
    sender.disconnect();
    assert.deepEqual(B.problems(page), []);
  });
});

describe('room names and limits', () => {
  const ctx = B.setup({ serverArgs: ['--rate-limit', '0', '--max-rooms-per-connection', '2'] });

  it('a bad name is refused on the page; the server\'s refusal is shown with Try again and Close', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const page = await B.openChat(ctx.browser, url, { nickname: 'Ivy' });
    await waitRoom(page, 'general');
    await joinWithForm(page, 'Dev Team');
    assert.equal(await page.textContent('#join-error'), 'A room name can use only a-z, 0-9, - and _ (not “D”, spaces, “T”).');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'join-input');
    await page.fill('#join-input', 'DEV');
    await page.press('#join-input', 'Enter');
    assert.match(await page.textContent('#join-error'), /Try “dev”\.$/);
    await page.fill('#join-input', '-dev');
    await page.press('#join-input', 'Enter');
    assert.match(await page.textContent('#join-error'), /starts with a letter/);
    await page.fill('#join-input', 'x'.repeat(65));
    await page.press('#join-input', 'Enter');
    assert.match(await page.textContent('#join-error'), /at most 64 characters/);
    assert.deepEqual((await roomList(page)).map((r) => r.name), ['general'], 'nothing joined');
    await page.fill('#join-input', 'dev');
    await page.press('#join-input', 'Enter');
    await waitJoined(page, 'dev');

    // a third room is over this server's limit of 2 per connection: the server says why
    await joinWithForm(page, 'third');
    await B.until(page, () => !document.getElementById('room-error').hidden, null, 'the refusal shown');
    assert.equal(await page.textContent('#room-error-text'), 'Could not join #third: too many rooms: this connection is in 2, the limit');
    assert.deepEqual(await roomList(page), [
      { name: 'dev', current: false, badge: '' },
      { name: 'general', current: false, badge: '' },
      { name: 'third', current: true, badge: 'not joined' },
    ]);
    await B.screenshot(page, '9-rooms-refused');
    await page.click('#room-close');
    await B.until(page, () => !document.querySelector('#rooms .room-link[data-room="third"]'), null, 'third closed');

    // a link with a bad name: a notice, and the room in view stays
    const before = await viewed(page);
    await page.evaluate(() => {
      location.hash = '#Not-A-Room';
    });
    await B.until(page, () => [...document.querySelectorAll('#notices > li')].some((n) => /^The link names no room/.test(n.textContent)), null, 'a notice about the link');
    assert.equal(await viewed(page), before);
    assert.equal(await page.evaluate(() => location.hash), `#${before}`);

    // more rooms remembered than the server now allows: the page comes back in the default
    // room and lists the others as not joined, with the server's reason; one can be retried
    await page.evaluate(() => localStorage.setItem('tidings.rooms', JSON.stringify({ joined: ['a1', 'a2', 'a3'], view: 'a2' })));
    await page.evaluate(() => {
      location.hash = '';
    });
    await page.reload({ waitUntil: 'load' });
    await B.waitStatus(page, 'connected');
    await waitRoom(page, 'a2');
    assert.equal(await page.textContent('#room-error-text'), 'Could not join #a2: invalid rooms: 3 rooms, the limit is 2 per connection');
    assert.deepEqual(await roomList(page), [
      { name: 'a1', current: false, badge: 'not joined' },
      { name: 'a2', current: true, badge: 'not joined' },
      { name: 'a3', current: false, badge: 'not joined' },
      { name: 'general', current: false, badge: '' },
    ]);
    await page.click('#room-retry');
    await waitJoined(page, 'a2');
    assert.equal(await page.isVisible('#room-error'), false);
    await B.typeAndSend(page, 'in a2 after all');
    await B.waitMessage(page, 'in a2 after all');
    // After a refused CONNECT socket.io-client closes its engine.io session; a long-poll still
    // in flight may then be answered 400 "Session ID unknown", which Chromium logs.
    assert.deepEqual(B.problems(page, [/status of 400 \(Bad Request\) \(http:[^ ]+transport=polling[^ ]*&sid=/]), []);
  });

  it('leaving every room: the page says so, a reload keeps it so, and a room can be joined again', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    // a link with a bad name on a first visit: a notice, and the default room
    const page = await B.openChat(ctx.browser, url, { nickname: 'Jo', path: '/#Bad!' });
    await waitRoom(page, 'general');
    await B.until(page, () => [...document.querySelectorAll('#notices > li')].some((n) => /^The link names no room/.test(n.textContent)), null, 'a notice about the link');
    await page.click('#leave-btn');
    await B.until(page, () => document.querySelectorAll('#rooms .room-link').length === 0, null, 'no room in the list');
    assert.equal(await page.textContent('#empty'), 'You are not in any room. Join one to start chatting.');
    assert.equal(await page.evaluate(() => location.hash), '');
    await B.typeAndSend(page, 'to nowhere');
    await B.until(page, () => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === 'Join a room to send messages.'), null, 'a notice instead of a send');
    assert.deepEqual(await B.pendingMessages(page), []);
    await page.reload({ waitUntil: 'load' });
    await B.waitStatus(page, 'connected');
    await B.until(page, () => !document.getElementById('empty').hidden && /not in any room/.test(document.getElementById('empty').textContent), null, 'still in no room');
    assert.deepEqual(await roomList(page), []);
    await joinWithForm(page, 'general');
    await waitJoined(page, 'general');
    await waitRoom(page, 'general');
    await B.typeAndSend(page, 'back in general');
    await B.waitMessage(page, 'back in general');
    assert.deepEqual(B.problems(page), []);
  });
});
