'use strict';
// Online backup: `GET /backup` on the admin port (--admin-listen) and `tidings backup --from
// URL DEST` take a consistent copy while acked messages keep coming; a server started on the
// copy has every message acked before the backup began, once; DEST is never overwritten; the
// public port serves no backup.
const { describe, it, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { start, stopAll, cleanup, BIN } = require('./server');
const { uid, client, connected, ack, closeAll } = require('./helpers');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-backup-'));

afterEach(() => closeAll());
after(async () => {
  closeAll();
  await stopAll();
  cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs `tidings ARGS`; resolves with { code, stderr } (bounded: 60 s). */
function run(args) {
  return new Promise((resolve) => {
    execFile(BIN, args, { timeout: 60000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code ?? 1 : 0, stderr });
    });
  });
}

describe('online backup', () => {
  it('a copy taken under acked load restores every message acked before it began, once', async () => {
    const srv = await start({ extraArgs: ['--admin-listen', '127.0.0.1:0', '--rate-limit', '0'] });
    const admin = await srv.admin;
    const sender = client(srv.url);
    await connected(sender);
    const acked = [];
    let sending = true;
    const load = (async () => {
      // Bounded: at most 5,000 messages, and it stops when the backup is done.
      for (let i = 0; sending && i < 5000; i++) {
        const reply = await ack(sender, uid(`m${i}`), uid('o'));
        acked.push(reply.id);
      }
    })();
    while (acked.length < 200) await new Promise((r) => setTimeout(r, 10));
    const before = acked.slice();
    const dest = path.join(dir, 'copy.redb');
    const taken = await run(['backup', '--from', admin, dest]);
    sending = false;
    await load;
    assert.equal(taken.code, 0, taken.stderr);
    assert.match(taken.stderr, /backed up \d+ messages to /);
    assert.ok(acked.length > before.length, 'acks went on during the backup');
    // Never over an existing file.
    const again = await run(['backup', '--from', admin, dest]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already exists/);
    const leftovers = fs.readdirSync(path.dirname(srv.db)).filter((f) => f.includes('.backup-'));
    assert.deepEqual(leftovers, [], 'the server keeps no temporary copy');
    await srv.stop();

    const restored = await start({ db: dest });
    const reader = client(restored.url, { auth: { serverOffset: 0 } });
    await connected(reader);
    const total = Number((await (await fetch(`${restored.url}/healthz`)).json()).lastId);
    assert.ok(total >= before[before.length - 1], 'the copy holds the acked ids');
    await reader.waitFor((r) => r.length > 0 && r[r.length - 1].id >= before[before.length - 1], 'the replay');
    const ids = reader.received.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'no id twice');
    const have = new Set(ids);
    const missing = before.filter((id) => !have.has(id));
    assert.deepEqual(missing, [], 'every message acked before the backup began');
  });

  it('is served on the admin port only', async () => {
    const srv = await start();
    assert.equal((await fetch(`${srv.url}/backup`)).status, 404);
    const dest = path.join(dir, 'nothing.redb');
    const taken = await run(['backup', '--from', srv.url, dest]);
    assert.notEqual(taken.code, 0);
    assert.match(taken.stderr, /cannot fetch .*\/backup/);
    assert.ok(!fs.existsSync(dest), 'nothing written');
    assert.ok(!fs.existsSync(`${dest}.partial`), 'nothing left behind');
  });
});
