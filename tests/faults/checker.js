// The checker: from what the clients saw and what every node stores after the run, the list
// of violations of tidings' promises. Pure functions of plain data (checker.test.js feeds it
// broken histories to show that each check can fail).
//
// Input:
//   acks:     [{ content, room, id, duplicate, node, at }]  every ack a sender got
//   unacked:  [{ content, room }]                           sent, never acked
//   ackErrors: [{ content, error, node }]                    acks that carried no id
//   readers:  [{ name, seen: [{ id, content, room }] }]     what each reader was given, in order
//   stores:   { node: [{ id, content, room, event? }] }      every node's rows (`tidings export`)
//   finals:   { node: { seen: [...] } }                     a reader per node after the run
//   faults:   [{ kind, recoveredAfterMs, recoveryBoundMs, minority?, notReadyAfterMs,
//               servedReads, ... }]
//
// The promises checked:
//   - an acked message is stored exactly once on every node, under the id it was acked with;
//   - no id was given to two different messages (acks across clients, and stores);
//   - every node stores the same history, in one id order;
//   - nothing is stored that no client sent, and no valid message is refused (an unavailable
//     cluster answers with silence, the client retries);
//   - every reader saw each message at most once, in id order, each as stored, with no gap
//     the history does not also have (between two ids a reader saw, it saw every stored id);
//   - a reader per node after the run gets the whole history;
//   - after each heal the cluster recovered within its bound; a node cut from the quorum said
//     so on /healthz, acked nothing new and still served reads from its replica.

'use strict';

function key(row) {
  return `${row.id}\u0000${row.room}\u0000${row.content}`;
}

/** The chat messages of a node's rows (room events and tombstones left out). */
function chatRows(rows) {
  return rows.filter((row) => !row.event);
}

function check({ acks, unacked = [], ackErrors = [], readers = [], stores, finals = {}, faults = [] }) {
  const violations = [];
  const add = (kind, detail) => violations.push({ kind, ...detail });
  for (const refused of ackErrors) add('ack with an error', refused);

  // Acks: one id per message, one message per id.
  const idOfContent = new Map();
  const contentOfId = new Map();
  for (const ack of acks) {
    const known = idOfContent.get(ack.content);
    if (known !== undefined && known !== ack.id) {
      add('acked with two ids', { content: ack.content, ids: [known, ack.id] });
    } else {
      idOfContent.set(ack.content, ack.id);
    }
    const other = contentOfId.get(ack.id);
    if (other !== undefined && other !== ack.content) {
      add('one id acked for two messages', { id: ack.id, contents: [other, ack.content] });
    } else {
      contentOfId.set(ack.id, ack.content);
    }
  }
  const roomOf = new Map();
  for (const message of [...acks, ...unacked]) roomOf.set(message.content, message.room);

  // Stores: each node's history in id order, each acked message once, under its id.
  const nodes = Object.keys(stores);
  const histories = {};
  for (const node of nodes) {
    const rows = chatRows(stores[node]);
    histories[node] = rows;
    const seenContent = new Map();
    let previous = 0;
    for (const row of rows) {
      if (!(row.id > previous)) {
        add('store out of id order', { node, id: row.id, after: previous });
      }
      previous = Math.max(previous, row.id);
      if (seenContent.has(row.content)) {
        add('stored twice', { node, content: row.content, ids: [seenContent.get(row.content), row.id] });
      }
      seenContent.set(row.content, row.id);
      if (!roomOf.has(row.content)) {
        add('stored but never sent', { node, id: row.id, content: row.content });
      } else if (roomOf.get(row.content) !== row.room) {
        add('stored in another room', { node, id: row.id, content: row.content, room: row.room });
      }
      const ackedContent = contentOfId.get(row.id);
      if (ackedContent !== undefined && ackedContent !== row.content) {
        add('acked id holds another message', { node, id: row.id, acked: ackedContent, stored: row.content });
      }
    }
    for (const [content, id] of idOfContent) {
      const stored = seenContent.get(content);
      if (stored === undefined) add('acked message lost', { node, content, id });
      else if (stored !== id) add('acked message stored under another id', { node, content, acked: id, stored });
    }
  }

  // Every node the same history.
  for (const node of nodes.slice(1)) {
    const a = histories[nodes[0]];
    const b = histories[node];
    const length = Math.max(a.length, b.length);
    for (let i = 0; i < length; i++) {
      if (!a[i] || !b[i] || key(a[i]) !== key(b[i])) {
        add('histories differ', { nodes: [nodes[0], node], index: i, rows: [a[i] || null, b[i] || null] });
        break;
      }
    }
  }

  // Readers: once each, in id order, as stored, no gap the history lacks.
  const reference = histories[nodes[0]] || [];
  const storedById = new Map(reference.map((row) => [row.id, row]));
  const position = new Map(reference.map((row, index) => [row.id, index]));
  const checkReader = (name, seen, whole) => {
    let previous = 0;
    for (let i = 0; i < seen.length; i++) {
      const message = seen[i];
      if (!(message.id > previous)) {
        add(message.id === previous || seen.slice(0, i).some((m) => m.id === message.id)
          ? 'reader saw a message twice' : 'reader saw ids out of order',
        { reader: name, id: message.id, after: previous });
        continue;
      }
      const stored = storedById.get(message.id);
      if (!stored) {
        add('reader saw a message no node stores', { reader: name, id: message.id, content: message.content });
      } else if (stored.content !== message.content || stored.room !== message.room) {
        add('reader saw another message than stored', { reader: name, id: message.id, saw: message, stored });
      } else if (previous > 0 && position.has(previous)) {
        const skipped = position.get(message.id) - position.get(previous) - 1;
        if (skipped > 0) {
          add('reader skipped stored messages', {
            reader: name,
            between: [previous, message.id],
            skipped,
            first: reference[position.get(previous) + 1].id,
          });
        }
      }
      previous = message.id;
    }
    if (whole && seen.length !== reference.length) {
      add('final reader did not get the whole history', { reader: name, got: seen.length, stored: reference.length });
    }
    if (!whole && seen.length > 0 && storedById.has(seen[0].id) && position.get(seen[0].id) !== 0) {
      add('reader from id 0 missed the first messages', { reader: name, first: seen[0].id });
    }
  };
  for (const reader of readers) checkReader(reader.name, reader.seen, false);
  for (const [node, final] of Object.entries(finals)) {
    if (final.error) add('final reader failed', { node, error: final.error });
    else checkReader(`final@${node}`, final.seen, true);
  }

  // Faults: recovery within the bound; the minority side unready and silent.
  for (const fault of faults) {
    if (fault.recoveredAfterMs === null || fault.recoveredAfterMs > fault.recoveryBoundMs) {
      add('no recovery within the bound', {
        fault: fault.kind,
        at: fault.startedAt,
        recoveredAfterMs: fault.recoveredAfterMs,
        boundMs: fault.recoveryBoundMs,
      });
    }
    for (const node of fault.minority || []) {
      // Only a fault held longer than the bound can show a node that failed to say so.
      const notReady = fault.notReadyAfterMs?.[node] ?? null;
      const heldLongEnough = fault.holdMs === undefined || fault.holdMs >= fault.readinessBoundMs;
      if (heldLongEnough && (notReady === null || notReady > fault.readinessBoundMs)) {
        add('cut-off node still said ready', { fault: fault.kind, node, notReadyAfterMs: notReady ?? null });
      }
      if (fault.servedReads && fault.servedReads[node] === false) {
        add('cut-off node served no reads', { fault: fault.kind, node });
      }
      const grace = fault.startedAt + fault.graceMs;
      for (const ack of acks) {
        if (ack.nodeName === node && !ack.duplicate && ack.at > grace && ack.at < fault.healedAt) {
          add('acked on the minority side', { fault: fault.kind, node, id: ack.id, content: ack.content, at: ack.at });
        }
      }
    }
  }
  return violations;
}

/**
 * For each fault: how long acks stopped, cluster-wide, between its start and its recovery
 * (the longest gap between two acks in that window, its ends counted as acks).
 */
function longestAckGap(ackTimes, from, to) {
  let previous = from;
  let longest = 0;
  for (const at of ackTimes) {
    if (at < from) continue;
    if (at > to) break;
    longest = Math.max(longest, at - previous);
    previous = at;
  }
  return Math.max(longest, to - previous);
}

module.exports = { check, longestAckGap };
