// The cluster under test, one process per host of net.js: three NATS servers (one JetStream
// cluster, the stream with 3 replicas) and three tidings nodes; and in every host a delay
// proxy (proxy.js) through which the host's processes reach the others (NATS routes, the
// nodes' NATS connections). The clients in the root namespace reach the nodes directly.

'use strict';

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');

const net = require('./net');

const STREAM = 'TIDINGS';
const NATS = net.HOSTS.filter((h) => h.kind === 'nats');
const NODES = net.HOSTS.filter((h) => h.kind === 'tidings');
const NODE_PORT = 3000;

/** The NATS server binary: NATS_SERVER, or `nats-server` on the PATH. */
const NATS_SERVER = process.env.NATS_SERVER || 'nats-server';

const BIN = process.env.TIDINGS_BIN
  ? path.resolve(process.env.TIDINGS_BIN)
  : path.resolve(__dirname, '../../target/release/tidings');

/** The local port in a host's proxy that leads to NATS server `index` (0-based). */
function routePort(index) {
  return 6301 + index;
}
function clientPort(index) {
  return 4301 + index;
}

/** GET `url` with a time limit: `{ status, body }`, or null if nothing answered. */
async function get(url, timeoutMs = 2000) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: response.status, body: await response.text() };
  } catch {
    return null;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

class Cluster {
  /** `dir`: where data, configs and logs go. */
  constructor(dir) {
    this.dir = dir;
    this.processes = new Map(); // name -> { proc, log, exited }
    this.proxies = new Map(); // host -> proc
  }

  nodeUrl(name) {
    return `http://${net.host(name).address}:${NODE_PORT}`;
  }

  nodeUrls() {
    return NODES.map((h) => this.nodeUrl(h.name));
  }

  dbOf(name) {
    return path.join(this.dir, `${name}.redb`);
  }

  /** Starts `command args` in host `host`'s namespace, output to `<dir>/<name>.log`. */
  spawnIn(host, name, command, args, env = {}) {
    const log = path.join(this.dir, `${name}.log`);
    const fd = fs.openSync(log, 'a');
    const proc = spawn('ip', ['netns', 'exec', net.namespace(host), command, ...args], {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...env },
    });
    fs.closeSync(fd);
    const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.processes.set(name, { proc, log, exited, host });
    return proc;
  }

  async startProxy(host, routes) {
    const proc = spawn(
      'ip',
      ['netns', 'exec', net.namespace(host), process.execPath, path.join(__dirname, 'proxy.js'), ...routes],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    this.proxies.set(host, proc);
    const lines = readline.createInterface({ input: proc.stdout });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`proxy in ${host} did not start`)), 10000);
      lines.once('line', (line) => {
        clearTimeout(timer);
        if (line === 'proxy ready') resolve();
        else reject(new Error(`proxy in ${host}: ${line}`));
      });
      proc.once('exit', (code) => reject(new Error(`proxy in ${host} exited with ${code}`)));
    });
  }

  /** Sets each host's proxy delays: `byHost` maps a host to its proxy's `delay` command. */
  setDelays(byHost) {
    for (const [host, proc] of this.proxies) {
      proc.stdin.write(`${JSON.stringify({ delay: byHost[host] || {} })}\n`);
    }
  }

  async start() {
    if (!fs.existsSync(BIN)) {
      throw new Error(`tidings binary not found at ${BIN}: cargo build --release, or set TIDINGS_BIN`);
    }
    for (const [i, h] of NATS.entries()) {
      const routes = NATS.map((other, j) => [other, j])
        .filter(([, j]) => j !== i)
        .map(([other, j]) => `127.0.0.1:${routePort(j)}=${other.address}:6222`);
      await this.startProxy(h.name, routes);
    }
    for (const h of NODES) {
      await this.startProxy(
        h.name,
        NATS.map((n, j) => `127.0.0.1:${clientPort(j)}=${n.address}:4222`),
      );
    }
    for (const [i, h] of NATS.entries()) {
      const routes = NATS.map((_, j) => j)
        .filter((j) => j !== i)
        .map((j) => `nats-route://127.0.0.1:${routePort(j)}`);
      const config = path.join(this.dir, `${h.name}.conf`);
      fs.writeFileSync(
        config,
        [
          `server_name: ${h.name}`,
          `listen: ${h.address}:4222`,
          `http: ${h.address}:8222`,
          `jetstream { store_dir: ${JSON.stringify(path.join(this.dir, `${h.name}-store`))} }`,
          // no_advertise: the servers tell neither each other nor the clients their direct
          // addresses, so every connection keeps going through the proxies.
          `cluster { name: tidings-faults, listen: ${h.address}:6222, no_advertise: true, routes: [${routes.join(', ')}] }`,
          '',
        ].join('\n'),
      );
      this.spawnIn(h.name, h.name, NATS_SERVER, ['-c', config]);
    }
    await this.waitNatsFormed(60000);
    const urls = NATS.map((_, j) => `nats://127.0.0.1:${clientPort(j)}`).join(',');
    for (const h of NODES) {
      this.spawnIn(
        h.name,
        h.name,
        BIN,
        [
          '--host', h.address, '--port', String(NODE_PORT),
          '--db', this.dbOf(h.name),
          '--cluster', urls, '--node-name', h.name, '--replicas', '3',
          '--rate-limit', '0',
        ],
        { RUST_LOG: process.env.TIDINGS_FAULTS_RUST_LOG || 'info' },
      );
    }
    await this.waitAllReady(90000);
  }

  /** Waits until the NATS meta leader sees both other servers current. */
  async waitNatsFormed(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const h of NATS) {
        const answer = await get(`http://${h.address}:8222/jsz`);
        if (!answer || answer.status !== 200) continue;
        try {
          const replicas = JSON.parse(answer.body).meta_cluster?.replicas || [];
          if (replicas.filter((r) => r.current).length === 2) return;
        } catch {
          // Not JSON yet.
        }
      }
      await sleep(200);
    }
    throw new Error(`the NATS servers did not form a cluster in ${timeoutMs} ms`);
  }

  /** Each node's `/healthz`: name -> { status, body } or null. */
  async health() {
    const out = {};
    await Promise.all(
      NODES.map(async (h) => {
        out[h.name] = await get(`${this.nodeUrl(h.name)}/healthz`, 1500);
      }),
    );
    return out;
  }

  async allReady() {
    const health = await this.health();
    return Object.values(health).every((answer) => answer && answer.status === 200);
  }

  async waitAllReady(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await this.allReady()) return;
      await sleep(250);
    }
    throw new Error(`not every node was ready within ${timeoutMs} ms: ${JSON.stringify(await this.health())}`);
  }

  /**
   * `pick(details)` of the stream's details (`/jsz?streams=true`) from the first server that
   * answers with a value for it; null if none does.
   */
  async fromStreamDetails(pick) {
    for (const h of NATS) {
      const answer = await get(`http://${h.address}:8222/jsz?streams=true`, 1500);
      if (!answer || answer.status !== 200) continue;
      try {
        for (const account of JSON.parse(answer.body).account_details || []) {
          for (const stream of account.stream_detail || []) {
            const value = stream.name === STREAM ? pick(stream) : null;
            if (value !== null && value !== undefined) return value;
          }
        }
      } catch {
        // Try the next server.
      }
    }
    return null;
  }

  /** The NATS server leading the stream (its host name). */
  streamLeader() {
    return this.fromStreamDetails((stream) => stream.cluster?.leader);
  }

  /** The stream's last sequence (its newest id). */
  streamLastSeq() {
    return this.fromStreamDetails((stream) => stream.state?.last_seq);
  }

  pidOf(name) {
    return this.processes.get(name).proc.pid;
  }

  /** Stops every tidings node with SIGTERM (each must exit 0), then everything else. */
  async stop() {
    const statuses = {};
    for (const h of NODES) {
      const entry = this.processes.get(h.name);
      if (!entry) continue;
      entry.proc.kill('SIGTERM');
      const timeout = sleep(20000).then(() => ({ code: null, signal: 'timeout' }));
      statuses[h.name] = await Promise.race([entry.exited, timeout]);
    }
    this.kill();
    return statuses;
  }

  /** Kills whatever still runs (SIGCONT first: a stopped process cannot die of SIGTERM). */
  kill() {
    for (const { proc } of this.processes.values()) {
      try {
        proc.kill('SIGCONT');
        proc.kill('SIGKILL');
      } catch {
        // Gone.
      }
    }
    for (const proc of this.proxies.values()) {
      try {
        proc.kill('SIGKILL');
      } catch {
        // Gone.
      }
    }
  }

  /** Every node's stored history (`tidings export`; the nodes must be stopped). */
  exportAll() {
    const out = {};
    for (const h of NODES) {
      const text = execFileSync(BIN, ['export', '--db', this.dbOf(h.name)], {
        encoding: 'utf8',
        maxBuffer: 1 << 30,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      out[h.name] = text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line));
    }
    return out;
  }

  /** The last `lines` lines of process `name`'s log. */
  logTail(name, lines = 40) {
    const entry = this.processes.get(name);
    if (!entry) return '';
    const text = fs.readFileSync(entry.log, 'utf8').split('\n');
    return text.slice(-lines).join('\n');
  }
}

module.exports = { Cluster, NATS, NATS_SERVER, NODES, STREAM, get, sleep };
