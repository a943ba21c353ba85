'use strict';
// ws_client.js drives one marketd connection with the `ws` library (Debian's
// node-ws, found with NODE_PATH=/usr/share/nodejs) for stream's
// TestDeflateClients:
//
//   NODE_PATH=/usr/share/nodejs node ws_client.js URL PERMESSAGE_DEFLATE_JSON
//
// PERMESSAGE_DEFLATE_JSON is ws's perMessageDeflate option (false, true, or
// an object). The session is the one every client of the test runs (see
// clients_test.go):
//   - subscribe to book depth 10 of LVL-USD and ORD-USD, trades of LVL-USD
//     and ticker "*", and ask for a full LVL-USD snapshot (op id 4); print
//     {"ready":true} once the three acks and that snapshot arrived;
//   - decode every message, split frames on '\n', parse the JSON, check
//     each stream's prev_seq chain (ticker: seq increasing), and ask for
//     another full snapshot every 50 data messages;
//   - on a line "sync N" on stdin send {"op":"ping","id":N} and print
//     {"synced":N} at its pong; on "end" the same with id 99, and once its
//     pong and every snapshot asked for arrived, close and print one JSON
//     summary line (exit status 1 when something went wrong).
//
// ws exposes neither the frames it reads nor its socket before the
// handshake, so the wire is read along through an http.Agent, whose
// createConnection is public: the tap sees the request it writes (the
// offer) and every byte it reads, and counts the server's data frames and
// those with RSV1 set after the response head.

const http = require('http');
const net = require('net');
const WebSocket = require('ws');

const [url, optionJSON] = process.argv.slice(2);
if (!url || optionJSON === undefined) {
  console.error('usage: node ws_client.js URL PERMESSAGE_DEFLATE_JSON');
  process.exit(2);
}

const END_ID = 99;
const SNAPSHOT_EVERY = 50;

const summary = {
  offer: '',
  answer: '',
  frames: 0, // data frames on the wire
  compressed: 0, // of which with RSV1 set
  messages: 0, // JSON messages after splitting frames
  counts: {}, // data messages per channel:symbol
  last: {}, // last seq per channel:symbol
  snapshots: 0, // book subscription snapshots
  op_snapshots: 0, // replies to snapshot ops
  error: '',
};

function fail(msg) {
  if (!summary.error) summary.error = msg;
}

// wireTap reads a connection along: the request head written (for its
// Sec-WebSocket-Extensions), then the server's frames after the response
// head (unmasked, RFC 6455 §5.2), keeping only header bytes.
class wireTap {
  constructor(socket) {
    this.req = '';
    this.head = Buffer.alloc(0);
    this.headDone = false;
    this.hdr = Buffer.alloc(0);
    this.skip = 0;
    const write = socket.write;
    socket.write = (chunk, ...rest) => {
      if (this.req !== null) {
        this.req += chunk.toString('latin1');
        const end = this.req.indexOf('\r\n\r\n');
        if (end >= 0) {
          const m = /\r\nsec-websocket-extensions: *([^\r]*)/i.exec(this.req.slice(0, end + 2));
          summary.offer = m ? m[1] : '';
          this.req = null;
        }
      }
      return write.call(socket, chunk, ...rest);
    };
    socket.on('data', (chunk) => this.read(chunk));
  }

  read(chunk) {
    let b = chunk;
    if (!this.headDone) {
      this.head = Buffer.concat([this.head, b]);
      const end = this.head.indexOf('\r\n\r\n');
      if (end < 0) return;
      b = this.head.subarray(end + 4);
      this.head = null;
      this.headDone = true;
    }
    while (b.length > 0) {
      if (this.skip > 0) {
        const k = Math.min(this.skip, b.length);
        this.skip -= k;
        b = b.subarray(k);
        continue;
      }
      this.hdr = Buffer.concat([this.hdr, b.subarray(0, 1)]);
      b = b.subarray(1);
      if (this.hdr.length < 2) continue;
      const len7 = this.hdr[1] & 0x7f;
      const need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (this.hdr[1] & 0x80 ? 4 : 0);
      if (this.hdr.length < need) continue;
      let n = len7;
      if (len7 === 126) n = this.hdr.readUInt16BE(2);
      else if (len7 === 127) n = Number(this.hdr.readBigUInt64BE(2));
      if ((this.hdr[0] & 0x0f) < 8) {
        summary.frames++;
        if (this.hdr[0] & 0x40) summary.compressed++;
      }
      this.hdr = Buffer.alloc(0);
      this.skip = n;
    }
  }
}

class TapAgent extends http.Agent {
  createConnection(options) {
    const socket = net.createConnection(options);
    new wireTap(socket); // eslint-disable-line no-new
    return socket;
  }
}

const ws = new WebSocket(url, {
  perMessageDeflate: JSON.parse(optionJSON),
  maxPayload: 64 << 20,
  agent: new TapAgent(),
});

ws.on('upgrade', (res) => {
  summary.answer = res.headers['sec-websocket-extensions'] || '';
});

function send(msg) {
  ws.send(JSON.stringify(msg));
}

const pending = new Set(); // ids of snapshot ops not yet answered
function askSnapshot(id) {
  pending.add(id);
  send({ op: 'snapshot', id, symbol: 'LVL-USD', depth: 0 });
}

ws.on('open', () => {
  send({ op: 'subscribe', id: 1, channel: 'book', symbols: ['LVL-USD', 'ORD-USD'], depth: 10 });
  send({ op: 'subscribe', id: 2, channel: 'trades', symbols: ['LVL-USD'] });
  send({ op: 'subscribe', id: 3, channel: 'ticker', symbols: ['*'] });
  askSnapshot(4);
});

const acks = new Set();
let ready = false;
let data = 0;
let ended = false; // the pong of END_ID arrived

function handle(line) {
  let m;
  try {
    m = JSON.parse(line);
  } catch (err) {
    fail(`bad JSON ${JSON.stringify(line.slice(0, 80))}: ${err.message}`);
    return;
  }
  summary.messages++;
  const key = `${m.channel}:${m.symbol}`;
  const started = key in summary.last;
  switch (m.type) {
    case 'ack':
      acks.add(m.id);
      break;
    case 'snapshot':
      if (!Array.isArray(m.bids) || !Array.isArray(m.asks) || typeof m.seq !== 'number') {
        fail(`bad snapshot ${line.slice(0, 80)}`);
      } else if (m.id !== undefined) {
        summary.op_snapshots++;
        pending.delete(m.id);
      } else {
        summary.snapshots++;
        summary.last[key] = m.seq;
      }
      break;
    case 'update':
    case 'trade':
      if (m.type === 'update' && !started) {
        fail(`${key}: update before snapshot`);
      } else if (typeof m.prev_seq !== 'number') {
        fail(`${key}: no prev_seq: ${line.slice(0, 80)}`);
      } else if (started && m.prev_seq !== summary.last[key]) {
        fail(`${key}: prev_seq ${m.prev_seq} after seq ${summary.last[key]}`);
      }
      break;
    case 'ticker':
      if (started && !(m.seq > summary.last[key])) {
        fail(`${key}: seq ${m.seq} after ${summary.last[key]}`);
      }
      break;
    case 'pong':
      if (m.id === END_ID) ended = true;
      else process.stdout.write(`${JSON.stringify({ synced: m.id })}\n`);
      break;
    default:
      fail(`unexpected message ${line.slice(0, 120)}`);
  }
  if (m.type === 'update' || m.type === 'trade' || m.type === 'ticker') {
    summary.last[key] = m.seq;
    summary.counts[key] = (summary.counts[key] || 0) + 1;
    data++;
    if (data % SNAPSHOT_EVERY === 0) askSnapshot(1000 + data / SNAPSHOT_EVERY);
  }
}

ws.on('message', (payload, isBinary) => {
  if (isBinary) fail('binary message');
  for (const line of payload.toString('utf8').split('\n')) handle(line);
  if (!ready && acks.has(1) && acks.has(2) && acks.has(3) && summary.op_snapshots === 1) {
    ready = true;
    process.stdout.write('{"ready":true}\n');
  }
  if (ended && pending.size === 0 && ws.readyState === WebSocket.OPEN) ws.close(1000);
});

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (s) => {
  input += s;
  const lines = input.split('\n');
  input = lines.pop();
  for (const l of lines) {
    const words = l.trim().split(' ');
    if (words[0] === 'sync') send({ op: 'ping', id: Number(words[1]) });
    else if (words[0] === 'end') send({ op: 'ping', id: END_ID });
  }
});

ws.on('error', (err) => fail(`ws error: ${err.message}`));
ws.on('close', (code) => {
  if (!ended || pending.size > 0) fail(`closed with ${code} before the end`);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(summary.error ? 1 : 0);
});
