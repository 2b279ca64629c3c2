// A TCP proxy that can delay what passes through it: the latency fault, since this machine's
// kernel has no netem. Runs inside one host's namespace (`ip netns exec`), listening on
// 127.0.0.1 ports that the host's processes use instead of the other hosts' addresses, so every
// connection the host opens to another host passes through it.
//
//   node proxy.js 127.0.0.1:6302=10.213.7.12:6222 127.0.0.1:4301=10.213.7.11:4222 ...
//
// Commands on standard input, one JSON object per line:
//   {"delay": {"*": [200, 50]}}              every connection: 200 ms +- 50 ms each way
//   {"delay": {"10.213.7.12": [200, 50]}}    connections to that address only
//   {"delay": {}}                            no delay
// A chunk's delay is drawn uniformly from [mean - jitter, mean + jitter], and no chunk
// overtakes the one before it (a TCP stream keeps its order), so jitter makes bursts. It
// prints `proxy ready` once every listener is bound, and exits when standard input closes.

'use strict';

const net = require('node:net');
const readline = require('node:readline');

/** Destination address (or "*") -> [mean ms, jitter ms]. */
let delays = {};

function delayFor(destination) {
  let total = 0;
  for (const key of ['*', destination]) {
    const entry = delays[key];
    if (!entry) continue;
    const [mean, jitter] = entry;
    total += Math.max(0, mean + (Math.random() * 2 - 1) * jitter);
  }
  return total;
}

/** Copies `from` to `to`, each chunk after the current delay to `destination`, in order. */
function pipe(from, to, destination) {
  // Chunks waiting for their time, in order; `null` is the end of the stream.
  const queue = [];
  let notBefore = 0;
  let timer = null;
  const drain = () => {
    timer = null;
    while (queue.length > 0 && queue[0].at <= Date.now()) {
      const { chunk } = queue.shift();
      if (to.destroyed) return;
      if (chunk === null) to.end();
      else to.write(chunk);
    }
    if (queue.length > 0) timer = setTimeout(drain, queue[0].at - Date.now());
  };
  const push = (chunk) => {
    const at = Math.max(Date.now() + delayFor(destination), notBefore);
    notBefore = at;
    queue.push({ at, chunk });
    if (timer === null) drain();
  };
  from.on('data', push);
  from.on('end', () => push(null));
}

function listen(spec) {
  const match = /^([\d.]+):(\d+)=([\d.]+):(\d+)$/.exec(spec);
  if (!match) throw new Error(`bad route ${spec}: expected IP:PORT=IP:PORT`);
  const [, host, port, toHost, toPort] = match;
  const server = net.createServer((inbound) => {
    const outbound = net.connect({ host: toHost, port: Number(toPort) });
    inbound.setNoDelay(true);
    outbound.setNoDelay(true);
    pipe(inbound, outbound, toHost);
    pipe(outbound, inbound, toHost);
    const close = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', close);
    outbound.on('error', close);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), host, resolve);
  });
}

async function main() {
  const routes = process.argv.slice(2);
  if (routes.length === 0) throw new Error('no routes given');
  await Promise.all(routes.map(listen));
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => {
    try {
      const command = JSON.parse(line);
      if (command.delay) delays = command.delay;
    } catch (e) {
      console.error(`proxy: bad command ${line}: ${e.message}`);
    }
  });
  input.on('close', () => process.exit(0));
  console.log('proxy ready');
}

main().catch((e) => {
  console.error(`proxy: ${e.message}`);
  process.exit(1);
});
