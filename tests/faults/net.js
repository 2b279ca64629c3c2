// The "hosts" of a fault run: one network namespace each, linked through one bridge, with
// addresses of a subnet that exists only there; and the packet filters (nftables) that cut,
// split or thin the links between them.
//
// Everything is named with the prefix `tdf-` and removed by `teardown()` (also what an
// interrupted earlier run left). The root namespace (this process, the clients) gets the
// bridge's address and is never filtered: the faults are rules inside the hosts' namespaces.

'use strict';

const { execFileSync } = require('node:child_process');

const PREFIX = 'tdf';
const BRIDGE = `${PREFIX}-br`;
const SUBNET = '10.213.7';
/** The root namespace's address on the bridge: where the clients and the harness are. */
const ROOT_ADDRESS = `${SUBNET}.1`;

/** The hosts: three NATS servers and three tidings nodes. */
const HOSTS = [
  { name: 'n1', kind: 'nats', address: `${SUBNET}.11` },
  { name: 'n2', kind: 'nats', address: `${SUBNET}.12` },
  { name: 'n3', kind: 'nats', address: `${SUBNET}.13` },
  { name: 't1', kind: 'tidings', address: `${SUBNET}.21` },
  { name: 't2', kind: 'tidings', address: `${SUBNET}.22` },
  { name: 't3', kind: 'tidings', address: `${SUBNET}.23` },
];

function namespace(host) {
  return `${PREFIX}-${host}`;
}

function run(command, args, input) {
  return execFileSync(command, args, {
    input,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Runs `args` inside host `host`'s namespace. */
function inHost(host, args, input) {
  return run('ip', ['netns', 'exec', namespace(host), ...args], input);
}

function tryRun(command, args) {
  try {
    run(command, args);
    return true;
  } catch {
    return false;
  }
}

/** Removes every namespace, link and process of a run (ours, or one an earlier run left). */
function teardown() {
  let names = [];
  try {
    names = run('ip', ['netns', 'list'])
      .split('\n')
      .map((line) => line.split(' ')[0])
      .filter((name) => name.startsWith(`${PREFIX}-`));
  } catch {
    // No namespaces at all.
  }
  for (const name of names) {
    let pids = '';
    try {
      pids = run('ip', ['netns', 'pids', name]).trim();
    } catch {
      // Already gone.
    }
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGCONT');
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // It exited meanwhile.
      }
    }
    tryRun('ip', ['netns', 'del', name]);
  }
  tryRun('ip', ['link', 'del', BRIDGE]);
}

/**
 * Creates the bridge and one namespace per host, each with `eth0` on the bridge at its
 * address, `lo` up, and an empty nftables table `inet tdf` (chains `input` and `output`)
 * where the faults go. Fails if anything on this machine already uses the subnet.
 */
function setup() {
  teardown();
  const taken = run('ip', ['-o', 'addr', 'show', 'to', `${SUBNET}.0/24`]).trim();
  if (taken) {
    throw new Error(`the subnet ${SUBNET}.0/24 is in use on this machine: ${taken}`);
  }
  run('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  run('ip', ['addr', 'add', `${ROOT_ADDRESS}/24`, 'dev', BRIDGE]);
  run('ip', ['link', 'set', BRIDGE, 'up']);
  for (const host of HOSTS) {
    const ns = namespace(host.name);
    const outside = `${PREFIX}-v-${host.name}`;
    const inside = `${PREFIX}-p-${host.name}`;
    run('ip', ['netns', 'add', ns]);
    run('ip', ['link', 'add', outside, 'type', 'veth', 'peer', 'name', inside]);
    run('ip', ['link', 'set', inside, 'netns', ns]);
    run('ip', ['link', 'set', outside, 'master', BRIDGE]);
    run('ip', ['link', 'set', outside, 'up']);
    inHost(host.name, ['ip', 'link', 'set', inside, 'name', 'eth0']);
    inHost(host.name, ['ip', 'addr', 'add', `${host.address}/24`, 'dev', 'eth0']);
    inHost(host.name, ['ip', 'link', 'set', 'eth0', 'up']);
    inHost(host.name, ['ip', 'link', 'set', 'lo', 'up']);
    inHost(
      host.name,
      ['nft', '-f', '-'],
      `table inet ${PREFIX} {
  chain input { type filter hook input priority 0; policy accept; }
  chain output { type filter hook output priority 0; policy accept; }
}
`,
    );
  }
}

function host(name) {
  const found = HOSTS.find((h) => h.name === name);
  if (!found) throw new Error(`no host ${name}`);
  return found;
}

function addressList(names) {
  return `{ ${names.map((n) => host(n).address).join(', ')} }`;
}

/** Adds nftables rules (lines of `nft` syntax after `add rule inet tdf `) to host `name`. */
function addRules(name, rules) {
  const text = rules.map((rule) => `add rule inet ${PREFIX} ${rule}\n`).join('');
  inHost(name, ['nft', '-f', '-'], text);
}

/** Host `name` drops every packet to and from the others, the clients included. */
function isolate(name) {
  addRules(name, ['input iifname "eth0" drop', 'output oifname "eth0" drop']);
}

/** Hosts `a` and `b` (lists of names) cannot reach each other, in either direction. */
function split(a, b) {
  for (const [side, other] of [
    [a, b],
    [b, a],
  ]) {
    for (const name of side) {
      addRules(name, [
        `input ip saddr ${addressList(other)} drop`,
        `output ip daddr ${addressList(other)} drop`,
      ]);
    }
  }
}

/** Host `to` no longer receives what hosts `from` send it; the other direction still works. */
function dropOneWay(from, to) {
  addRules(to, [`input ip saddr ${addressList(from)} drop`]);
}

/** Host `name` drops `percent` % of the packets it sends and receives on its link. */
function lose(name, percent) {
  addRules(name, [
    `input iifname "eth0" numgen random mod 100 < ${percent} drop`,
    `output oifname "eth0" numgen random mod 100 < ${percent} drop`,
  ]);
}

/** Removes every rule of every host. */
function healAll() {
  for (const h of HOSTS) {
    inHost(h.name, ['nft', 'flush', 'table', 'inet', PREFIX]);
  }
}

/** Every host's rules, for the record. */
function rules() {
  const out = {};
  for (const h of HOSTS) {
    out[h.name] = inHost(h.name, ['nft', 'list', 'table', 'inet', PREFIX]);
  }
  return out;
}

module.exports = {
  HOSTS,
  ROOT_ADDRESS,
  SUBNET,
  addRules,
  dropOneWay,
  healAll,
  host,
  inHost,
  isolate,
  lose,
  namespace,
  rules,
  setup,
  split,
  teardown,
};
