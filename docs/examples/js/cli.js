// Runs BookClient in node and prints the top of the book after every verified
// message, then a summary line:
//
//   node --experimental-websocket cli.js --url ws://localhost:8080/v1/ws --symbol BTC-USD --updates 200
//
// (node 22 and later have WebSocket without the flag.)

import { parseArgs } from 'node:util';
import { BookClient } from './client.js';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://localhost:8080/v1/ws' },
    symbol: { type: 'string', default: 'BTC-USD' },
    depth: { type: 'string', default: '10' },
    updates: { type: 'string', default: '0' },
    'corrupt-after': { type: 'string', default: '0' },
  },
});

if (typeof WebSocket === 'undefined') {
  console.error('cli.js: this node has no WebSocket: run node 22+, or node 20 with --experimental-websocket');
  process.exit(2);
}

const top = (level) => (level ? `${level[0]} x ${level[1]}` : '-');

const client = new BookClient({
  url: args.url,
  symbol: args.symbol,
  depth: Number(args.depth),
  updates: Number(args.updates),
  corruptAfter: Number(args['corrupt-after']),
  onBook: (what, c) => {
    console.log(`${c.symbol} ${what} seq=${c.lastSeq} bid ${top(c.book.bids.best())} | ask ${top(c.book.asks.best())} | verified=${c.stats.verified}`);
  },
  onLog: (line) => console.error(line),
  onDone: (err) => {
    console.log(client.summary());
    if (err) {
      console.error(`cli.js: ${err.message}`);
      process.exitCode = 1;
    }
  },
});

process.on('SIGINT', () => client.stop());
client.start();
