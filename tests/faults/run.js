#!/usr/bin/env node
// A fault run: builds the hosts (net.js), starts the cluster in them (cluster.js), runs the
// workload (workload.js) while the nemesis (nemesis.js) injects and heals faults, then stops
// everything, reads every node's file and checks the lot (checker.js). Writes one JSON
// summary and exits 1 on any violation (2 when the run itself could not be carried out).
//
//   sudo node tests/faults/run.js                          # the short schedule (CI)
//   sudo node tests/faults/run.js --long 1800 --seed 7     # 30 minutes of random faults
//   options: --out FILE (default target/faults/summary.json), TIDINGS_BIN (default
//   target/release/tidings)
//
// Needs root (namespaces, nftables), `ip`, `nft` and `nats-server`.

'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const net = require('./net');
const { Cluster, NATS_SERVER, NODES, sleep } = require('./cluster');
const { Workload } = require('./workload');
const nemesis = require('./nemesis');
const { check, longestAckGap } = require('./checker');

/** After a heal, the cluster must take messages again on every node within this. */
const RECOVERY_BOUND_MS = 60000;
/** How long a recovery is waited for before the run goes on regardless (and reports it). */
const RECOVERY_GIVE_UP_MS = 180000;
/** A node cut from the quorum must say so on /healthz within this. */
const READINESS_BOUND_MS = 10000;
/** An ack from a cut-off node after this much of the fault is a violation (unless a duplicate). */
const GRACE_MS = 2000;

function parseArgs(argv) {
  const args = { long: 0, seed: Date.now() % 1000000, out: null };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--long') {
      args.long = Number(value());
      if (!Number.isInteger(args.long) || args.long < 60 || args.long > 86400) {
        throw new Error('--long takes whole seconds, 60 to 86400');
      }
    } else if (flag === '--seed') {
      args.seed = Number(value());
      if (!Number.isSafeInteger(args.seed) || args.seed < 0) throw new Error('--seed takes an integer >= 0');
    } else if (flag === '--out') {
      args.out = value();
    } else {
      throw new Error(`unknown option ${flag} (options: --long SECONDS, --seed N, --out FILE)`);
    }
  }
  return args;
}

function log(text) {
  const t = new Date().toISOString().slice(11, 23);
  console.log(`[faults ${t}] ${text}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid() !== 0) throw new Error('run as root: it creates network namespaces and nftables rules');
  const out = path.resolve(args.out || path.join(__dirname, '../../target/faults/summary.json'));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-faults-'));
  const cluster = new Cluster(dir);

  let cleaned = false;
  const cleanUp = () => {
    if (cleaned) return;
    cleaned = true;
    cluster.kill();
    net.teardown();
  };
  process.on('exit', cleanUp);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => {
      log(`${signal}: tearing down`);
      cleanUp();
      process.exit(2);
    });
  }

  log(`hosts: ${net.HOSTS.map((h) => `${h.name}=${h.address}`).join(' ')}; files in ${dir}`);
  net.setup();
  await cluster.start();
  log('cluster ready: 3 NATS servers, 3 tidings nodes');

  const names = NODES.map((h) => h.name);
  const workload = new Workload(cluster.nodeUrls());
  workload.start();
  await sleep(5000);
  if (workload.acks.length === 0) throw new Error('no ack in the first 5 s without any fault');

  const runStart = Date.now();
  const faults = [];
  const schedule = args.long > 0 ? nemesis.longSchedule(args.seed) : nemesis.shortSchedule();
  for (const step of schedule) {
    if (args.long > 0 && Date.now() - runStart > args.long * 1000) break;
    const startedAt = Date.now();
    const injected = [];
    for (const kind of step.kinds) injected.push(await nemesis.inject(kind, cluster, step.choose));
    const holdMs = Math.max(step.holdMs, ...injected.map((f) => f.fixedMs || 0));
    const minority = [...new Set(injected.flatMap((f) => f.minority))];
    const unreachable = new Set(injected.flatMap((f) => f.unreachable || []));
    const description = injected.map((f) => `${f.kind} ${f.target}`).join(' + ');
    log(`fault: ${description} for ${holdMs / 1000} s`);
    // While it holds: when each node stops saying ready (a cut-off node must; the others
    // may, e.g. while their NATS server is frozen, and it is recorded).
    const notReadyAfterMs = Object.fromEntries(names.map((n) => [n, null]));
    // And, once it says so, whether it still serves reads from its replica.
    const servedReads = Object.fromEntries(minority.filter((n) => !unreachable.has(n)).map((n) => [n, null]));
    while (Date.now() - startedAt < holdMs) {
      const health = await cluster.health();
      for (const node of names) {
        if (notReadyAfterMs[node] === null && health[node]?.status !== 200) {
          notReadyAfterMs[node] = Date.now() - startedAt;
        }
        if (notReadyAfterMs[node] !== null && node in servedReads && servedReads[node] === null) {
          servedReads[node] = await workload.servesReads(names.indexOf(node));
        }
      }
      await sleep(250);
    }
    for (const fault of injected.reverse()) await fault.heal();
    const healedAt = Date.now();
    let recoveredAfterMs = null;
    while (Date.now() - healedAt < RECOVERY_GIVE_UP_MS) {
      if (workload.lastAckAt > healedAt && (await cluster.allReady())) {
        recoveredAfterMs = Date.now() - healedAt;
        break;
      }
      await sleep(250);
    }
    const ackTimes = workload.acks.map((a) => a.at);
    const record = {
      kind: step.kinds.join('+'),
      target: injected.map((f) => f.target).join('+'),
      startedAt,
      healedAt,
      holdMs,
      recoveredAfterMs,
      recoveryBoundMs: RECOVERY_BOUND_MS,
      longestAckGapMs: longestAckGap(ackTimes, startedAt, healedAt + (recoveredAfterMs ?? 0)),
      acksDuring: ackTimes.filter((t) => t >= startedAt && t < healedAt).length,
      minority,
      notReadyAfterMs,
      servedReads,
      readinessBoundMs: READINESS_BOUND_MS,
      graceMs: GRACE_MS,
    };
    faults.push(record);
    log(
      `healed: recovered after ${recoveredAfterMs ?? 'never'} ms; longest without acks ` +
        `${record.longestAckGapMs} ms; ${record.acksDuring} acks during the fault` +
        `; not ready after ${JSON.stringify(notReadyAfterMs)} ms` +
        (minority.length ? `; cut off, served reads: ${JSON.stringify(servedReads)}` : ''),
    );
    await sleep(step.quietMs ?? 3000);
  }

  log('schedule done; a last 5 s without faults');
  await sleep(5000);
  await workload.stop();
  const lastId = Math.max(0, ...workload.acks.map((a) => a.id));
  const streamEnd = await cluster.streamLastSeq();
  log(`workload stopped: ${workload.acks.length} acks, newest id ${lastId}, stream ends at ${streamEnd}`);
  const finals = await workload.finalReads(streamEnd ?? lastId, 60000);
  const finalByName = Object.fromEntries(Object.entries(finals).map(([n, f]) => [names[n], f]));
  const exits = await cluster.stop();
  const stores = cluster.exportAll();
  cleanUp();

  for (const ack of workload.acks) ack.nodeName = names[ack.node];
  const violations = check({
    acks: workload.acks,
    unacked: workload.unacked,
    ackErrors: workload.ackErrors,
    readers: workload.readers,
    stores,
    finals: finalByName,
    faults,
  });
  for (const [node, status] of Object.entries(exits)) {
    if (status.code !== 0) violations.push({ kind: 'node did not stop cleanly', node, ...status });
  }

  const byKind = {};
  for (const fault of faults) {
    for (const kind of fault.kind.split('+')) {
      const entry = (byKind[kind] ??= { injected: 0, longestAckGapMs: 0, longestRecoveryMs: 0 });
      entry.injected += 1;
      entry.longestAckGapMs = Math.max(entry.longestAckGapMs, fault.longestAckGapMs);
      entry.longestRecoveryMs = Math.max(entry.longestRecoveryMs, fault.recoveredAfterMs ?? Infinity);
    }
  }
  const summary = {
    schedule: args.long > 0 ? `long ${args.long} s` : 'short',
    seed: args.long > 0 ? args.seed : null,
    startedAt: new Date(runStart).toISOString(),
    seconds: Math.round((Date.now() - runStart) / 1000),
    nats: require('node:child_process').execFileSync(NATS_SERVER, ['--version'], { encoding: 'utf8' }).trim(),
    messages: {
      acked: new Set(workload.acks.map((a) => a.content)).size,
      acks: workload.acks.length,
      duplicateAcks: workload.acks.filter((a) => a.duplicate).length,
      attempts: workload.attempts,
      timeouts: workload.timeouts,
      ackErrors: workload.ackErrors.length,
      unacked: workload.unacked.length,
      stored: Object.fromEntries(Object.entries(stores).map(([n, rows]) => [n, rows.length])),
    },
    readers: workload.readers.map((r) => ({ name: r.name, seen: r.seen.length, reconnects: r.reconnects })),
    faultsInjected: faults.reduce((n, f) => n + f.kind.split('+').length, 0),
    byKind,
    faults,
    violationCount: violations.length,
    violationsByKind: violations.reduce((by, v) => ({ ...by, [v.kind]: (by[v.kind] || 0) + 1 }), {}),
    // The first thousand: a broken replica makes one per message.
    violations: violations.slice(0, 1000),
    ok: violations.length === 0,
  };
  fs.writeFileSync(out, `${JSON.stringify(summary, null, 2)}\n`);
  log(
    `${summary.messages.acked} messages acked, ${summary.faultsInjected} faults, ` +
      `${violations.length} violations; summary in ${out}`,
  );
  for (const [kind, entry] of Object.entries(byKind)) {
    log(`  ${kind}: ${entry.injected}x, longest without acks ${entry.longestAckGapMs} ms, longest recovery ${entry.longestRecoveryMs} ms`);
  }
  for (const v of violations.slice(0, 20)) log(`VIOLATION ${JSON.stringify(v)}`);
  if (violations.length === 0) fs.rmSync(dir, { recursive: true, force: true });
  else log(`files kept for a look: ${dir}`);
  process.exitCode = violations.length === 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(`[faults] the run failed: ${e.stack || e.message}`);
  process.exitCode = 2;
  process.exit(2);
});
