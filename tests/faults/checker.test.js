'use strict';
// The checker must catch each kind of broken history: a check that cannot fail proves nothing.
// Each test starts from one consistent run and breaks one thing.

const test = require('node:test');
const assert = require('node:assert');

const { check, longestAckGap } = require('./checker');

function row(id, content, room = 'general') {
  return { id, content, clientOffset: content, room };
}

/** Three messages acked, stored alike on two nodes, seen by one reader and the final ones. */
function consistent() {
  const rows = [row(1, 's0-0'), row(2, 's1-0', 'r2'), row(3, 's0-1')];
  const seen = rows.map(({ id, content, room }) => ({ id, content, room }));
  return {
    acks: rows.map((r) => ({ content: r.content, room: r.room, id: r.id, duplicate: false, nodeName: 't1', at: 1000 + r.id })),
    unacked: [],
    readers: [{ name: 'reader0', seen: [...seen] }],
    stores: { t1: rows.map((r) => ({ ...r })), t2: rows.map((r) => ({ ...r })) },
    finals: { t1: { seen: [...seen] }, t2: { seen: [...seen] } },
    faults: [],
  };
}

function kinds(violations) {
  return [...new Set(violations.map((v) => v.kind))].sort();
}

test('a consistent run has no violation', () => {
  assert.deepStrictEqual(check(consistent()), []);
});

test('an acked message missing on one node', () => {
  const run = consistent();
  run.stores.t2.splice(1, 1);
  const found = kinds(check(run));
  assert.ok(found.includes('acked message lost'), found);
  assert.ok(found.includes('histories differ'), found);
});

test('a message stored twice, and one stored that nobody sent', () => {
  const run = consistent();
  for (const node of ['t1', 't2']) run.stores[node].push(row(4, 's0-1'), row(5, 'ghost'));
  const found = kinds(check(run));
  assert.ok(found.includes('stored twice'), found);
  assert.ok(found.includes('stored but never sent'), found);
});

test('a valid message answered with an error', () => {
  const run = consistent();
  run.ackErrors = [{ content: 's0-2', error: { error: 'not in room r2: join it first' }, node: 't1' }];
  assert.deepStrictEqual(kinds(check(run)), ['ack with an error']);
});

test('one id acked for two messages, one message acked with two ids', () => {
  const run = consistent();
  run.acks.push({ content: 's9-9', room: 'general', id: 2, duplicate: false, nodeName: 't2', at: 2000 });
  run.acks.push({ content: 's0-0', room: 'general', id: 3, duplicate: true, nodeName: 't2', at: 2001 });
  const found = kinds(check(run));
  assert.ok(found.includes('one id acked for two messages'), found);
  assert.ok(found.includes('acked with two ids'), found);
});

test('nodes that hold the same messages under other ids', () => {
  const run = consistent();
  run.stores.t2 = [row(1, 's0-0'), row(2, 's0-1'), row(3, 's1-0', 'r2')];
  const found = kinds(check(run));
  assert.ok(found.includes('histories differ'), found);
  assert.ok(found.includes('acked id holds another message'), found);
});

test('a reader given a message twice, out of order, or past a gap', () => {
  for (const [seen, expected] of [
    [[1, 2, 2, 3], 'reader saw a message twice'],
    [[1, 3, 2], 'reader saw ids out of order'],
    [[1, 3], 'reader skipped stored messages'],
  ]) {
    const run = consistent();
    const byId = new Map(run.stores.t1.map((r) => [r.id, r]));
    run.readers[0].seen = seen.map((id) => ({ id, content: byId.get(id).content, room: byId.get(id).room }));
    assert.ok(kinds(check(run)).includes(expected), `${seen}: ${kinds(check(run))}`);
  }
});

test('a reader given another message than stored, and a final reader short of the history', () => {
  const run = consistent();
  run.readers[0].seen[1] = { id: 2, content: 'other', room: 'r2' };
  run.finals.t2.seen.pop();
  const found = kinds(check(run));
  assert.ok(found.includes('reader saw another message than stored'), found);
  assert.ok(found.includes('final reader did not get the whole history'), found);
});

test('a fault without recovery, a cut-off node that said ready, acked and served no reads', () => {
  const run = consistent();
  run.faults.push({
    kind: 'node-cut-from-nats',
    startedAt: 1000,
    healedAt: 1100,
    graceMs: 1,
    recoveredAfterMs: null,
    recoveryBoundMs: 60000,
    minority: ['t1'],
    notReadyAfterMs: { t1: null },
    servedReads: { t1: false },
    readinessBoundMs: 10000,
  });
  const found = kinds(check(run));
  assert.deepStrictEqual(found, [
    'acked on the minority side',
    'cut-off node served no reads',
    'cut-off node still said ready',
    'no recovery within the bound',
  ]);
  // A fault shorter than the readiness bound does not require the node to have said so.
  run.faults[0].holdMs = 6000;
  assert.ok(!kinds(check(run)).includes('cut-off node still said ready'));
  run.faults[0].holdMs = 15000;
  assert.ok(kinds(check(run)).includes('cut-off node still said ready'));
  // A duplicate answered from the node's own replica is not a new ack.
  for (const ack of run.acks) ack.duplicate = true;
  run.faults[0].recoveredAfterMs = 500;
  run.faults[0].notReadyAfterMs.t1 = 4000;
  run.faults[0].servedReads.t1 = true;
  assert.deepStrictEqual(check(run), []);
});

test('the longest stretch without acks counts the window ends', () => {
  assert.strictEqual(longestAckGap([], 0, 100), 100);
  assert.strictEqual(longestAckGap([10, 20, 90], 0, 100), 70);
  assert.strictEqual(longestAckGap([5, 50], 10, 60), 40);
});
