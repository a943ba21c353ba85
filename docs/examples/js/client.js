// BookClient keeps a verified copy of one marketd book over WebSocket.
//
// It applies the snapshot and every update, checks that each update's
// prev_seq is the seq it holds (else it missed something) and that the CRC-32
// checksum of its book equals the server's after every message (protocol.md
// §3). On a gap or a mismatch it drops the book and subscribes again; when the
// connection drops it reconnects and resumes from the last seq it holds.
//
// It uses the standard WebSocket class: every browser has it, and so does
// node (22 and later; node 20 with --experimental-websocket).

import { Book, addTiny } from './book.js';

const MIN_BACKOFF_MS = 250; // before the first reconnect; doubles after each failure
const MAX_BACKOFF_MS = 5000;

export class BookClient {
  /**
   * @param {object} opts
   * @param {string} opts.url       marketd WebSocket URL, e.g. ws://localhost:8080/v1/ws
   * @param {string} opts.symbol    the symbol whose book to keep
   * @param {number} [opts.depth]   1, 10, 25, 50, 100, 500, 1000, or 0 for the whole book (default 10)
   * @param {number} [opts.updates] stop after this many verified updates (default 0: never)
   * @param {number} [opts.corruptAfter] after this many verified updates, corrupt the local
   *   book once, to show the resync (default 0: never)
   * @param {(what: string, client: BookClient) => void} [opts.onBook] after every verified message
   * @param {(line: string) => void} [opts.onLog] connection events, resyncs
   * @param {(err: Error|null) => void} [opts.onDone] once, when the client stops
   */
  constructor(opts) {
    this.url = opts.url;
    this.symbol = opts.symbol;
    this.depth = opts.depth ?? 10;
    this.updates = opts.updates ?? 0;
    this.corruptAfter = opts.corruptAfter ?? 0;
    this.onBook = opts.onBook ?? (() => {});
    this.onLog = opts.onLog ?? (() => {});
    this.onDone = opts.onDone ?? (() => {});

    this.book = new Book();
    this.synced = false; // the book holds a snapshot and every update since
    this.lastSeq = 0; // seq of the last message applied
    this.connected = false;
    this.stats = {
      verified: 0, snapshots: 0, mismatches: 0, gaps: 0, resyncs: 0,
      reconnects: 0, resumed_exact: 0, resumed_snapshot: 0,
    };
    this._ws = null;
    this._nextId = 0;
    this._subId = null;
    this._pending = false; // the last subscribe has no ack yet
    this._damaged = false;
    this._everOpened = false;
    this._stopped = false;
    this._timer = null;
    this._backoff = MIN_BACKOFF_MS;
  }

  /** summary is the one-line account of what happened. */
  summary() {
    return 'summary ' + Object.entries(this.stats).map(([k, v]) => `${k}=${v}`).join(' ');
  }

  /** start connects; it reconnects by itself until stop or the end. */
  start() {
    this._connect();
  }

  /** stop closes the connection for good; onDone(null) follows. */
  stop() {
    this._finish(null);
  }

  _finish(err) {
    if (this._stopped) return;
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.close(1000, 'done');
    this.connected = false;
    this.onDone(err);
  }

  _connect() {
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this._finish(new Error(`connect ${this.url}: ${e.message}`));
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = this._everOpened = true;
      this.connected = true;
      this._backoff = MIN_BACKOFF_MS;
      // Carry on from the held seq when the book is good.
      this._subscribe(this.synced ? { [this.symbol]: this.lastSeq } : null);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string' || this._stopped || ws !== this._ws) return;
      // A frame holds one message or several separated by '\n'.
      for (const line of ev.data.split('\n')) {
        if (line === '') continue;
        let m;
        try {
          m = JSON.parse(line);
        } catch (e) {
          this.onLog(`bad message ${line}: ${e.message}`);
          ws.close(1000, 'bad message'); // onclose reconnects
          return;
        }
        this._handle(m);
        if (this._stopped) return;
      }
    };
    // Browsers fire error then close when a connection fails or drops;
    // node 20 fires only error for a connection that never opened.
    let ended = false;
    const lost = (code) => {
      if (ended || ws !== this._ws) return;
      ended = true;
      this.connected = false;
      if (this._stopped) return;
      if (!this._everOpened) {
        this._finish(new Error(`connect ${this.url}: failed (close code ${code})`));
        return;
      }
      const wait = this._backoff;
      this._backoff = Math.min(2 * this._backoff, MAX_BACKOFF_MS);
      this.onLog(`connection lost (code ${code}${opened ? '' : ', never opened'}); reconnecting in ${wait} ms`);
      this._timer = setTimeout(() => {
        this.stats.reconnects++;
        this._connect();
      }, wait);
    };
    ws.onerror = () => lost(1006);
    ws.onclose = (ev) => lost(ev.code);
  }

  _send(obj) {
    this._ws.send(JSON.stringify(obj));
  }

  _subscribe(resume) {
    this._subId = ++this._nextId;
    this._pending = true;
    const req = {
      op: 'subscribe', id: this._subId, channel: 'book',
      symbols: [this.symbol], depth: this.depth, interval: 'raw',
    };
    if (resume) req.resume = resume;
    this._send(req);
  }

  // _resync drops the book and subscribes again: the server answers with a
  // fresh snapshot. Updates still in flight from the old subscription come
  // before it and are ignored while the client is not synced.
  _resync(why) {
    this.onLog(`resync ${this.symbol}: ${why}`);
    this.stats.resyncs++;
    this.synced = false;
    this.book = new Book();
    this._subscribe(null);
  }

  // _verify checks the book against the message's checksum; on a mismatch it
  // resyncs and returns false.
  _verify(m) {
    const got = this.book.checksum();
    if (got === m.checksum) return true;
    this.stats.mismatches++;
    this._resync(`${m.type} seq ${m.seq}: checksum ${got}, server says ${m.checksum}`);
    return false;
  }

  _handle(m) {
    switch (m.type) {
      case 'snapshot': {
        // One with an id answers a snapshot op (not sent here).
        if (m.symbol !== this.symbol || 'id' in m) return;
        this.stats.snapshots++;
        this.book = new Book();
        try {
          this.book.apply(m.bids, m.asks);
        } catch (e) {
          this._resync(e.message);
          return;
        }
        this.lastSeq = m.seq;
        if (!this._verify(m)) return;
        this.synced = true;
        this.onBook('snapshot', this);
        return;
      }
      case 'update': {
        if (m.symbol !== this.symbol || !this.synced) return; // not ours, or from a replaced subscription
        if (m.prev_seq !== this.lastSeq) {
          this.stats.gaps++;
          this._resync(`gap: update prev_seq ${m.prev_seq}, held seq ${this.lastSeq}`);
          return;
        }
        try {
          this.book.apply(m.bids, m.asks);
        } catch (e) {
          this._resync(e.message);
          return;
        }
        this.lastSeq = m.seq;
        if (!this._verify(m)) return;
        this.stats.verified++;
        this.onBook('update', this);
        if (this._done()) {
          this._finish(null);
          return;
        }
        if (this.corruptAfter > 0 && !this._damaged && this.stats.verified >= this.corruptAfter) {
          this._damaged = true;
          this._corrupt();
        }
        return;
      }
      case 'ack':
        if (m.id !== this._subId) return;
        this._pending = false;
        for (const [sym, how] of Object.entries(m.resumed || {})) {
          this.onLog(`resumed ${sym}: ${how}`);
          this.stats[how === 'exact' ? 'resumed_exact' : 'resumed_snapshot']++;
        }
        if (this._done()) this._finish(null);
        return;
      case 'error':
        if (m.id === this._subId) {
          this._finish(new Error(`subscribe refused: ${m.code}: ${m.message}`));
          return;
        }
        this.onLog(`server error ${m.code}: ${m.message}`);
        return;
      case 'notice':
        this.onLog(`notice ${m.code}: ${m.message}`);
        return;
      default:
      // Other types (ticker, trade, pong, and any added later) are not ours.
    }
  }

  // _done reports whether the wanted updates are verified. It waits for the
  // ack of the last subscribe too, so that the summary says how the last
  // (re)subscription started: the server sends a resumed stream's missed
  // updates before the ack.
  _done() {
    return this.updates > 0 && this.stats.verified >= this.updates && !this._pending;
  }

  // _corrupt adds a bid 10^-8 above the best bid: a price the server never
  // sends, so the next checksum cannot match and the client must resync.
  _corrupt() {
    const best = this.book.bids.best();
    const p = addTiny(best ? best[0] : '0');
    this.onLog(`corrupting the local book: bid ${p} x 1`);
    this.book.bids.set(p, '1');
  }
}
