'use strict';
// Scenario 10: signing in with a token (--auth). The page takes the token from the URL's
// fragment once, keeps it in the tab's sessionStorage and out of the address bar, shows who
// you are, sends as that user (the server says so to everyone), keeps the sign-in across a
// reload, renews it from a new `#token=`, and says why when the server refuses it.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const B = require('./browser');

const SECRET = crypto.randomBytes(48).toString('base64');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-browser-identity-'));
const secretFile = path.join(dir, 'secret');
fs.writeFileSync(secretFile, SECRET);

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** An HS256 token for `sub`, as an application would sign it. */
function token(sub, name, { ttl = 600, secret = SECRET } = {}) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttl, ...(name ? { name } : {}) };
  const message = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${message}.${crypto.createHmac('sha256', secret).update(message).digest('base64url')}`;
}

describe('signing in with a token', () => {
  const ctx = B.setup({ serverArgs: ['--rate-limit', '0', '--auth', 'optional', '--jwt-secret-file', secretFile] });

  it('the token leaves the address bar; the page shows and sends as the signed-in user; a reload keeps it', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    // A page that also remembers a nickname of its own: the token's name wins.
    const page = await B.openChat(ctx.browser, url, { nickname: 'Mallory', path: `/#dev&token=${token('u-zoe', 'Zoë')}` });
    assert.equal(await page.evaluate(() => location.hash), '#dev', 'the room stays, the token goes');
    assert.match(await page.evaluate(() => sessionStorage.getItem('tidings.token')), /^ey/);
    assert.equal(await page.textContent('#nick-btn'), 'Zoë');
    assert.equal(await page.getAttribute('#nick-btn', 'aria-label'), 'Signed in as Zoë (u-zoe)');
    await B.until(page, () => document.getElementById('room-name').textContent === 'dev', null, 'room dev in view');

    // An onlooker with the official client sees the verified sender.
    const onlooker = B.client(url, { auth: { rooms: ['dev'] } });
    await B.connected(onlooker);
    const seen = new Promise((resolve) => onlooker.on('chat message', (content, id, meta) => resolve({ content, meta })));
    const text = 'signed and sealed';
    await B.typeAndSend(page, text);
    await B.waitMessage(page, text);
    const { content, meta } = await seen;
    assert.equal(content, text);
    assert.deepEqual([meta.author, meta.user, meta.room], ['Zoë', 'u-zoe', 'dev']);
    const shown = (await B.shownMessages(page)).find((m) => m.text === text);
    assert.equal(shown.author, 'Zoë');
    assert.equal(shown.mine, true);

    // The name cannot be changed here: it comes from the sign-in.
    await page.click('#nick-btn');
    assert.equal(await page.isVisible('#nick-form'), false);

    // A reload keeps the sign-in (sessionStorage), with nothing in the address bar.
    await page.reload({ waitUntil: 'load' });
    await B.waitStatus(page, 'connected');
    assert.equal(await page.textContent('#nick-btn'), 'Zoë');
    assert.equal(await page.evaluate(() => location.hash.includes('token')), false);

    // A new token for the same user in the fragment renews this connection's sign-in.
    await page.evaluate((t) => {
      location.hash = `dev&token=${t}`;
    }, token('u-zoe', 'Zoë', { ttl: 3600 }));
    await B.until(page, () => [...document.querySelectorAll('#notices > li')].some((n) => n.textContent === 'Sign-in renewed'), null, '"Sign-in renewed"');
    assert.equal(await page.evaluate(() => location.hash), '#dev');
    await page.close();
  });

  it('a refused token says why; without one the page is anonymous', { skip: B.SKIP }, async () => {
    const url = ctx.srv.url;
    const bad = await B.openChat(ctx.browser, url, { path: `/#token=${token('u-eve', 'Eve', { secret: 'not the server secret, 32+ bytes long' })}`, waitConnected: false });
    await B.until(bad, () => /bad signature/.test(document.getElementById('status-text').textContent), null, 'the refusal shown');
    await bad.close();
    const anonymous = await B.openChat(ctx.browser, url, { nickname: 'Guest' });
    assert.equal(await anonymous.textContent('#nick-btn'), 'Guest');
    assert.match(await anonymous.getAttribute('#nick-btn', 'aria-label'), /Change it/);
    await anonymous.close();
  });
});
