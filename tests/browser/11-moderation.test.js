'use strict';
// Scenario 11: moderation from the page (--auth optional, tokens). Alice creates a private
// room with the "+ New" form; Bob, not invited, neither sees it in the directory nor may join
// it; Alice invites him from "Manage", and he joins it from the directory. Alice deletes Bob's
// message from its menu: it disappears live on Bob's page and stays gone after his reload;
// Bob deletes his own; a deletion made while Bob is offline reaches him as he reconnects.
// Alice mutes Bob (his send shows "muted in this room"), Bob's own try at kicking Alice shows
// the server's "not allowed", Alice kicks Bob (his page says he was removed, the room is no
// longer joined) and bans him. A read-only room refuses Bob's post with the server's reason.
// Rooms a browser remembers and is refused at connect (`sync`'s `refused`) are listed as not
// joined, with the reason. With --auth off no moderation control shows, even for a page that
// carries a token.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const B = require('./browser');

const SECRET = crypto.randomBytes(48).toString('base64');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-browser-moderation-'));
const secretFile = path.join(dir, 'secret');
fs.writeFileSync(secretFile, SECRET);
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** An HS256 token for `sub`, as an application would sign it (ten minutes). */
function token(sub, name) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + 600, ...(name ? { name } : {}) };
  const message = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${message}.${crypto.createHmac('sha256', SECRET).update(message).digest('base64url')}`;
}

/** A page signed in as `sub` (a new browser context: one person), connected. */
const openAs = (browser, url, sub, name, opts = {}) => B.openChat(browser, url, { path: `/#token=${token(sub, name)}`, ...opts });

const viewed = (page) => page.textContent('#room-name');
const texts = (page) => page.$$eval('#messages > li.msg .msg-text', (l) => l.map((e) => e.textContent));
const notices = (page) => page.$$eval('#notices > li', (l) => l.map((e) => e.textContent));
const visible = (page, selector) => page.isVisible(selector);

function waitRoom(page, name) {
  return B.until(page, (n) => document.getElementById('room-name').textContent === n && location.hash === `#${n}`, name, `room #${name} in view`);
}

/** Waits until the room is in the list and joined (no "joining…" / "not joined" badge). */
function waitJoined(page, name) {
  return B.until(
    page,
    (n) => [...document.querySelectorAll('#rooms .room-link')].some((a) => a.dataset.room === n && !/joining|not joined/.test(a.querySelector('.room-badge').textContent)),
    name,
    `#${name} joined`,
  );
}

/** The room's entry in the list: { text, badge, private, label }, or null. */
const roomEntry = (page, name) =>
  page.evaluate((n) => {
    const a = document.querySelector(`#rooms .room-link[data-room="${n}"]`);
    if (!a) return null;
    const lock = a.querySelector('.room-private');
    return {
      badge: a.querySelector('.room-badge').textContent,
      private: !!lock && !lock.hidden && lock.textContent.includes('private'),
      label: a.getAttribute('aria-label'),
    };
  }, name);

async function openRoom(page, name) {
  await page.click(`#rooms .room-link[data-room="${name}"]`);
  await waitRoom(page, name);
}

function waitSystem(page, text) {
  return B.until(page, (t) => [...document.querySelectorAll('#messages > li.msg-system .msg-system-text')].some((e) => e.textContent === t), text, `the line "${text}"`);
}

function waitGone(page, text) {
  return B.until(page, (t) => ![...document.querySelectorAll('#messages > li .msg-text')].some((e) => e.textContent === t), text, `message "${text}" gone`);
}

function waitNotice(page, text) {
  return B.until(page, (t) => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === t), text, `the notice "${text}"`);
}

/** The id of the message shown with this text (waits for it). */
function idOf(page, text) {
  return B.until(
    page,
    (t) => {
      const li = [...document.querySelectorAll('#messages > li.msg')].find((l) => l.querySelector('.msg-text').textContent === t);
      return li ? li.dataset.id : null;
    },
    text,
    `message "${text}" on the page`,
  );
}

/** Opens the "⋯" menu of the message with this text; returns the labels it offers. */
async function openMenu(page, text) {
  const id = await idOf(page, text);
  await page.click(`#messages > li[data-id="${id}"] .msg-menu-btn`);
  const menu = page.locator(`#messages > li[data-id="${id}"] .msg-menu`);
  await menu.waitFor({ state: 'visible' });
  return { id, menu, labels: await menu.locator('button').allTextContents() };
}

/** Picks `action` in the menu of the message with this text. */
async function act(page, text, action) {
  const { menu } = await openMenu(page, text);
  await menu.getByRole('button', { name: action, exact: true }).click();
}

/** The "+ New" form: creates a room, as a user would. */
async function createRoom(page, name, { private: priv = false, readOnly = false } = {}) {
  await page.click('#create-btn');
  await B.until(page, () => document.activeElement.id === 'create-input', null, 'the new room field focused');
  await page.keyboard.type(name);
  if (priv) await page.check('#create-private');
  if (readOnly) await page.check('#create-readonly');
  await page.click('#create-form button[type="submit"]');
}

/** The "Manage" form of the room in view: `button` on user `user`. */
async function manage(page, user, button) {
  if (!(await visible(page, '#manage-form'))) await page.click('#manage-btn');
  await page.fill('#manage-user', user);
  await page.locator('#manage-form').getByRole('button', { name: button, exact: true }).click();
}

/** The directory under "+ Join": waits until it lists `expected`; returns the names it lists (with "private"). */
async function directory(page, expected) {
  if (!(await visible(page, '#join-form'))) await page.click('#join-btn');
  await B.until(page, (n) => [...document.querySelectorAll('#directory .directory-room')].some((b) => b.dataset.room === n), expected, `#${expected} in the directory`);
  return page.$$eval('#directory .directory-room', (l) =>
    l.map((b) => `${b.dataset.room}${b.querySelector('.room-private') ? ' (private)' : ''}`),
  );
}

const AUTH = ['--rate-limit', '0', '--auth', 'optional', '--jwt-secret-file', secretFile, '--server-admin', 'root'];

describe('moderation from the page', () => {
  const ctx = B.setup({ serverArgs: AUTH });

  it('a private room, an invitation, deletions live and after a reload, mute, a refusal, kick and ban', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const alice = await openAs(ctx.browser, url, 'alice', 'Alice');
    const bob = await openAs(ctx.browser, url, 'bob', 'Bob');
    await waitRoom(alice, 'general');
    await waitRoom(bob, 'general');
    assert.ok(await visible(alice, '#create-btn'), '"+ New" shows to a signed-in user');

    // Alice creates a private room from the page: she is in it, it is marked private.
    await createRoom(alice, 'ops', { private: true });
    await waitRoom(alice, 'ops');
    await waitJoined(alice, 'ops');
    assert.deepEqual(await roomEntry(alice, 'ops'), { badge: '', private: true, label: 'ops, private' });
    assert.ok(await visible(alice, '#room-private'), 'the room head says private');
    assert.equal(await alice.textContent('#room-private'), 'private');
    // ...and a public read-only room, which the directory lists to everyone.
    await createRoom(alice, 'news', { readOnly: true });
    await waitRoom(alice, 'news');
    await waitJoined(alice, 'news');
    assert.ok(await visible(alice, '#room-readonly'), 'the room head says read-only');
    // A name that exists is the server's to refuse, and the form says so.
    await createRoom(alice, 'general');
    await B.until(alice, () => document.getElementById('create-error').textContent === 'Could not create #general: room exists', null, 'the refusal in the form');
    await alice.keyboard.press('Escape');
    assert.equal(await visible(alice, '#create-form'), false);

    // Bob is not invited: the directory leaves ops out, and joining it is refused.
    assert.deepEqual(await directory(bob, 'news'), ['news']);
    await bob.fill('#join-input', 'ops');
    await bob.keyboard.press('Enter');
    await waitRoom(bob, 'ops');
    await B.until(bob, () => document.getElementById('room-error-text').textContent === 'Could not join #ops: not allowed', null, 'the refusal');
    await B.screenshot(bob, '11-moderation-not-invited');
    await bob.click('#room-close');
    await waitRoom(bob, 'general');

    // A read-only room: Bob reads, and his post is refused with the server's reason.
    await directory(bob, 'news');
    await bob.click('#directory .directory-room[data-room="news"]');
    await waitRoom(bob, 'news');
    await waitJoined(bob, 'news');
    await B.typeAndSend(bob, 'may I?');
    await B.until(bob, () => [...document.querySelectorAll('#outbox > li.failed .msg-state')].some((s) => s.textContent === 'Not sent: read-only room: only moderators post'), null, 'the read-only refusal');
    await bob.click('#outbox > li.failed button.discard');

    // Alice invites Bob from "Manage"; the room says so; the directory lists it to Bob now.
    await openRoom(alice, 'ops');
    await alice.click('#manage-btn');
    await B.until(alice, () => document.activeElement.id === 'manage-user', null, 'the user id field focused');
    await alice.keyboard.type('bob');
    await alice.keyboard.press('Enter'); // Invite: the form's one submit, in a private room
    await B.until(alice, () => document.getElementById('manage-result').textContent === 'Invited bob to #ops: they may join it now.', null, 'the invitation done');
    await waitSystem(alice, 'You invited bob');
    await B.screenshot(alice, '11-moderation-invite');
    await alice.keyboard.press('Escape');
    assert.equal(await visible(alice, '#manage-form'), false, 'Escape closes "Manage"');
    await bob.click('#join-btn');
    assert.deepEqual(await directory(bob, 'ops'), ['ops (private)']);
    await bob.click('#directory .directory-room[data-room="ops"]');
    await waitRoom(bob, 'ops');
    await waitJoined(bob, 'ops');
    assert.ok(await visible(bob, '#room-private'));

    // Bob posts; Alice deletes it from its menu: gone on both pages, live.
    await B.typeAndSend(alice, 'welcome, Bob');
    await B.waitMessage(bob, 'welcome, Bob');
    await B.typeAndSend(bob, 'something regrettable');
    await B.waitMessage(alice, 'something regrettable');
    await B.waitMessage(bob, 'something regrettable');
    const offered = await openMenu(alice, 'something regrettable');
    assert.deepEqual(offered.labels, ['Delete', 'Mute Bob', 'Kick Bob', 'Ban Bob']);
    await B.screenshot(alice, '11-moderation-menu');
    await offered.menu.getByRole('button', { name: 'Delete', exact: true }).click();
    await waitGone(alice, 'something regrettable');
    await waitGone(bob, 'something regrettable');
    await B.typeAndSend(alice, 'after the deletion');
    await B.waitMessage(bob, 'after the deletion');
    // ...and after Bob reloads: neither the replay nor history brings it back.
    await bob.reload({ waitUntil: 'load' });
    await B.waitStatus(bob, 'connected');
    await waitRoom(bob, 'ops');
    await waitJoined(bob, 'ops');
    await B.waitMessage(bob, 'after the deletion');
    await B.waitMessage(bob, 'welcome, Bob');
    assert.ok(!(await texts(bob)).includes('something regrettable'), JSON.stringify(await texts(bob)));

    // Bob deletes his own message: the menu offers only Delete.
    await B.typeAndSend(bob, 'typo, sorry');
    await B.waitMessage(alice, 'typo, sorry');
    const own = await openMenu(bob, 'typo, sorry');
    assert.deepEqual(own.labels, ['Delete']);
    await own.menu.getByRole('button', { name: 'Delete', exact: true }).click();
    await waitGone(bob, 'typo, sorry');
    await waitGone(alice, 'typo, sorry');

    // A deletion while Bob is offline reaches him when he reconnects (the replay).
    await B.typeAndSend(bob, 'said before going offline');
    await B.waitMessage(alice, 'said before going offline');
    await B.waitMessage(bob, 'said before going offline');
    await bob.click('#toggle-btn');
    await B.waitStatus(bob, 'offline');
    await act(alice, 'said before going offline', 'Delete');
    await waitGone(alice, 'said before going offline');
    assert.ok((await texts(bob)).includes('said before going offline'), 'still shown while offline');
    await bob.click('#toggle-btn');
    await B.waitStatus(bob, 'connected');
    await waitGone(bob, 'said before going offline');

    // Alice mutes Bob: both pages say so; Bob's next message is refused with the reason.
    await B.typeAndSend(bob, 'third from bob');
    await B.waitMessage(alice, 'third from bob');
    await act(alice, 'third from bob', 'Mute Bob');
    await waitSystem(alice, 'You muted bob');
    await waitSystem(bob, 'alice muted you');
    await B.typeAndSend(bob, 'let me speak');
    await B.until(bob, () => [...document.querySelectorAll('#outbox > li.failed .msg-state')].some((s) => s.textContent === 'Not sent: muted in this room'), null, 'the muted refusal');
    await B.screenshot(bob, '11-moderation-muted');
    await bob.click('#outbox > li.failed button.discard');

    // Bob tries to kick Alice: the page shows the server's refusal, nothing else happens.
    await act(bob, 'welcome, Bob', 'Kick Alice');
    await waitNotice(bob, 'Could not kick Alice: not allowed');

    // The keyboard alone: Tab from the log reaches the newest message's menu button (one
    // stop for the whole log), ↑/↓ move between messages, Enter opens the menu with focus in
    // it, Escape closes it.
    const focusedText = (page) => page.evaluate(() => {
      const li = document.activeElement.closest('li.msg');
      return document.activeElement.classList.contains('msg-menu-btn') && li ? li.querySelector('.msg-text').textContent : null;
    });
    assert.equal(await alice.locator('#messages .msg-menu-btn[tabindex="0"]').count(), 1, 'one tab stop in the log');
    await alice.focus('#scroller');
    await alice.keyboard.press('Tab');
    assert.equal(await focusedText(alice), 'third from bob');
    await alice.keyboard.press('ArrowUp');
    assert.equal(await focusedText(alice), 'after the deletion');
    await alice.keyboard.press('ArrowDown');
    assert.equal(await focusedText(alice), 'third from bob');
    await alice.keyboard.press('Enter');
    await B.until(alice, () => !!document.activeElement.closest('.msg-menu') && document.activeElement.textContent === 'Delete', null, 'focus in the menu');
    await alice.keyboard.press('Escape');
    await B.until(alice, () => !document.querySelector('.msg-menu') && document.activeElement.classList.contains('msg-menu-btn'), null, 'the menu closed, focus back on its button');

    // Alice kicks Bob: his page says he was removed; ops is no longer joined.
    await act(alice, 'third from bob', 'Kick Bob');
    await waitSystem(alice, 'You removed bob from the room');
    await B.until(bob, () => document.getElementById('room-error-text').textContent === 'You were removed from #ops by alice.', null, 'the removal shown');
    assert.ok(await visible(bob, '#room-error'));
    await waitNotice(bob, 'You were removed from #ops by alice.');
    assert.deepEqual(await roomEntry(bob, 'ops'), { badge: 'not joined', private: true, label: 'ops, private, not joined' });
    assert.equal(await visible(bob, '#manage-btn'), false, '"Manage" is for a room you are in');
    await B.screenshot(bob, '11-moderation-kicked');
    // Nothing of the room reaches him any more, and a reload does not ask for it.
    await B.typeAndSend(alice, 'bob is gone');
    await B.waitMessage(alice, 'bob is gone');
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(!(await texts(bob)).includes('bob is gone'), 'nothing more of ops reaches Bob');
    assert.deepEqual(await bob.evaluate(() => JSON.parse(localStorage.getItem('tidings.rooms')).joined.sort()), ['general', 'news']);

    // Alice bans Bob from "Manage"; Bob's "Try again" is refused with the reason.
    await manage(alice, 'bob', 'Ban');
    await B.until(alice, () => document.getElementById('manage-result').textContent === 'bob is banned from #ops.', null, 'the ban done');
    await waitSystem(alice, 'You banned bob from the room');
    await bob.click('#room-retry');
    await B.until(bob, () => document.getElementById('room-error-text').textContent === 'Could not join #ops: banned from this room', null, 'the ban refusal');

    // On a phone: the menu and its actions fit and are reachable.
    await alice.setViewportSize(B.PHONE);
    const phone = await openMenu(alice, 'third from bob');
    assert.equal(phone.labels.length, 4);
    const box = await phone.menu.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= B.PHONE.width, `the menu fits a phone: ${JSON.stringify(box)}`);
    await B.screenshot(alice, '11-moderation-phone-menu');
    await alice.keyboard.press('Escape');

    for (const page of [alice, bob]) assert.deepEqual(B.problems(page), [], 'no page errors');
    await alice.close();
    await bob.close();
  });

  it('rooms a browser remembers and may not join (sync.refused) are listed as not joined, with the reason', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    // Alice makes a private room with the official client; Carol's browser remembers it.
    const owner = B.client(url, { auth: { token: token('alice', 'Alice'), rooms: [] } });
    await B.connected(owner);
    assert.deepEqual(await owner.timeout(B.WAIT_MS).emitWithAck('create room', { room: 'vault', private: true }), { room: 'vault', ok: true, last: 0 });
    const carol = await B.newPage(ctx.browser);
    await carol.context().addInitScript(() => {
      if (!sessionStorage.getItem('seeded')) {
        localStorage.setItem('tidings.rooms', JSON.stringify({ joined: ['general', 'vault'] }));
        sessionStorage.setItem('seeded', '1');
      }
    });
    await carol.goto(`${url}/#vault&token=${token('carol', 'Carol')}`, { waitUntil: 'load' });
    await B.waitStatus(carol, 'connected');
    await waitRoom(carol, 'vault');
    await B.until(
      carol,
      () => document.getElementById('room-error-text').textContent === 'Could not join #vault: not allowed (a private room you are not a member of, or a ban)',
      null,
      'the refusal at connect',
    );
    assert.equal((await roomEntry(carol, 'vault')).badge, 'not joined');
    await waitJoined(carol, 'general');
    await B.screenshot(carol, '11-moderation-refused');
    // Close forgets it.
    await carol.click('#room-close');
    await waitRoom(carol, 'general');
    assert.equal(await roomEntry(carol, 'vault'), null);
    assert.deepEqual(B.problems(carol), []);
    await carol.close();
  });
});

describe('--auth off: no moderation on the page', () => {
  const ctx = B.setup();

  it('no control shows, for an anonymous page nor for one carrying a token the server ignores', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const anonymous = await B.openChat(ctx.browser, url, { nickname: 'Guest' });
    await B.typeAndSend(anonymous, 'hello from a guest');
    await B.waitMessage(anonymous, 'hello from a guest');
    assert.equal(await visible(anonymous, '#create-btn'), false);
    assert.equal(await visible(anonymous, '#manage-btn'), false);
    assert.equal(await anonymous.locator('.msg-menu-btn').count(), 0);
    // A token, yet the server has no identities: its own message comes back anonymous, and
    // the page takes its controls away.
    const signed = await openAs(ctx.browser, url, 'zoe', 'Zoë');
    await B.typeAndSend(signed, 'am I signed in?');
    await B.waitMessage(signed, 'am I signed in?');
    await B.until(signed, () => document.getElementById('create-btn').hidden && document.getElementById('manage-btn').hidden, null, 'the controls hidden');
    assert.equal(await signed.locator('.msg-menu-btn:visible').count(), 0);
    for (const page of [anonymous, signed]) assert.deepEqual(B.problems(page), []);
    await anonymous.close();
    await signed.close();
  });
});
