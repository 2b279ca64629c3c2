// The nemesis: the faults a run injects, each with its heal, and the schedules that order them.
//
// Kinds (the target is chosen when the fault starts; "the leader" is the NATS server leading
// the stream, as its monitoring endpoint says at that moment):
//   isolate-host        one host drops everything (its NATS server or node, cut from all)
//   isolate-leader      the leader and one tidings node on one side, the rest on the other
//   node-cut-from-nats  a tidings node reaches no NATS server; clients still reach it
//   one-way             the leader hears nothing from the other NATS servers (it still sends)
//   latency             everything to and from one host waits 200 ms +- 50 ms each way
//   loss                one host drops 5 % of the packets it sends and receives
//   stall-leader        the leader's process is stopped (SIGSTOP) for 20 s, then continued

'use strict';

const net = require('./net');
const { NATS, NODES } = require('./cluster');

const KINDS = [
  'isolate-host',
  'isolate-leader',
  'node-cut-from-nats',
  'one-way',
  'latency',
  'loss',
  'stall-leader',
];

const LATENCY = [200, 50];
const LOSS_PERCENT = 5;
const STALL_MS = 20000;

/** A small seeded generator (mulberry32), so a schedule can be replayed from its seed. */
function random(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(next() * list.length)],
  };
}

/**
 * Starts fault `kind` on `cluster`: resolves to `{ kind, target, minority, unreachable?, heal }`,
 * where `minority` lists the tidings nodes that can no longer reach a quorum (they must turn
 * unready, ack nothing new and still serve reads), `unreachable` the hosts the clients cannot
 * reach either, and `heal()` undoes the fault. `choose(list)` picks a target
 * where the kind leaves a choice.
 */
async function inject(kind, cluster, choose) {
  const leader = async () => {
    for (let i = 0; i < 40; i++) {
      const name = await cluster.streamLeader();
      if (name) return name;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error('the stream has no leader to aim at');
  };
  const healNet = async () => net.healAll();
  switch (kind) {
    case 'isolate-host': {
      const target = choose(net.HOSTS.map((h) => h.name));
      net.isolate(target);
      return { kind, target, minority: [], unreachable: [target], heal: healNet };
    }
    case 'isolate-leader': {
      const target = await leader();
      const node = choose(NODES.map((h) => h.name));
      const minority = [target, node];
      const majority = net.HOSTS.map((h) => h.name).filter((n) => !minority.includes(n));
      net.split(minority, majority);
      return { kind, target: `${target}+${node}`, minority: [node], heal: healNet };
    }
    case 'node-cut-from-nats': {
      const node = choose(NODES.map((h) => h.name));
      net.split([node], NATS.map((h) => h.name));
      return { kind, target: node, minority: [node], heal: healNet };
    }
    case 'one-way': {
      const target = await leader();
      net.dropOneWay(NATS.map((h) => h.name).filter((n) => n !== target), target);
      return { kind, target, minority: [], heal: healNet };
    }
    case 'latency': {
      const target = choose([await leader(), ...net.HOSTS.map((h) => h.name)]);
      const delays = {};
      for (const h of net.HOSTS) {
        delays[h.name] = h.name === target ? { '*': LATENCY } : { [net.host(target).address]: LATENCY };
      }
      cluster.setDelays(delays);
      return {
        kind,
        target,
        minority: [],
        heal: async () => cluster.setDelays({}),
      };
    }
    case 'loss': {
      const target = choose([await leader(), ...net.HOSTS.map((h) => h.name)]);
      net.lose(target, LOSS_PERCENT);
      return { kind, target, minority: [], heal: healNet };
    }
    case 'stall-leader': {
      const target = await leader();
      const pid = cluster.pidOf(target);
      process.kill(pid, 'SIGSTOP');
      return {
        kind,
        target,
        minority: [],
        fixedMs: STALL_MS,
        heal: async () => process.kill(pid, 'SIGCONT'),
      };
    }
    default:
      throw new Error(`unknown fault ${kind}`);
  }
}

/**
 * The short schedule (CI): every kind once, in a fixed order, each `holdMs` long (the stall
 * its 20 s), the first choice of each (the first tidings node, the leader).
 */
function shortSchedule(holdMs = 12000) {
  return KINDS.map((kind) => ({ kinds: [kind], holdMs, choose: (list) => list[0] }));
}

/**
 * A long randomized schedule of about `durationMs`: faults of random kinds and targets, held
 * 5 to 30 s, a third of them two kinds at once (a partition under latency, a stall under
 * loss, ...), with 2 to 10 s of quiet after each recovery. The same seed, the same schedule.
 */
function* longSchedule(seed) {
  const rng = random(seed);
  for (;;) {
    const first = rng.pick(KINDS);
    const kinds = [first];
    if (rng.next() < 1 / 3) {
      const second = rng.pick(KINDS.filter((k) => k !== first));
      kinds.push(second);
    }
    yield {
      kinds,
      holdMs: rng.int(5, 30) * 1000,
      quietMs: rng.int(2, 10) * 1000,
      choose: (list) => rng.pick(list),
    };
  }
}

module.exports = { KINDS, LATENCY, LOSS_PERCENT, STALL_MS, inject, longSchedule, random, shortSchedule };
