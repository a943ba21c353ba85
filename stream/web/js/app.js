// The marketd live page: one WebSocket to /v1/ws carrying the ticker of every
// symbol, the trades of every symbol and the depth-25 book of the chosen one.
// Every book message is checked against the server's checksum and its
// prev_seq; on a mismatch or a gap the page resubscribes. Messages only change
// state; drawing happens once per animation frame from that state.
//
// window.marketd exposes the state for tests and curious people (see the
// `pub` object below), and every key element carries a data-testid.

import { Book } from './book.js';
import { Connection } from './conn.js';
import { DepthChart } from './depth.js';
import { PriceChart } from './candles.js';
import { fixed, fracDigits, num, compact, hms } from './format.js';

const BOOK_DEPTH = 25;
const TAPE_ROWS = 60;
const RESYNC_MIN_GAP_MS = 1000; // at most one resubscribe a second (the server rate-limits ops)
const RESYNC_TIMEOUT_MS = 5000; // a resume that has not caught up by then: full snapshot
const DEPTH_REDRAW_MS = 100;
const NOTICE_MS = 10000;

const $ = (id) => document.getElementById(id);

// ---- state -----------------------------------------------------------------

const S = {
  symbols: [], // sorted
  tickers: new Map(), // symbol -> last ticker message
  lastDir: new Map(), // symbol -> +1 / -1: direction of the last price move
  pxDec: new Map(), // symbol -> fractional digits of prices seen
  szDec: new Map(), // symbol -> fractional digits of sizes seen
  tape: new Map(), // symbol -> recent trades, newest last
  symbol: '',
  book: null, // Book of S.symbol
  bookSub: 0, // id of the live book subscribe op
  pending: null, // resync under way: {since, mode: 'resume' | 'snapshot'}
  lastResync: 0,
  resyncTimer: 0,
  ops: new Map(), // op id -> the op, until its ack or error
  interval: 5,
  newTrades: [], // trades of S.symbol not yet on the tape
  dirty: { ladder: true, depth: true, stats: true, strip: true, picker: true, bar: true },
  lastDepthDraw: 0,
  rate: { msgs: 0, bytes: 0, trades: 0, t: performance.now(), msgsPerSec: 0, tradesPerSec: 0 },
  noticeUntil: 0,
};

/** pub is window.marketd: a live view of the page's state, for tests. */
const pub = {
  symbol: '',
  connected: false,
  connState: 'connecting',
  checksumState: 'waiting', // 'waiting' | 'ok' | 'resyncing'
  checksumOK: false,
  lastSeq: 0, // seq of the last verified book message
  snapshots: 0,
  updates: 0, // book updates applied and verified
  verified: 0, // book messages whose checksum matched
  mismatches: 0,
  gaps: 0,
  resyncs: 0,
  bidLevels: 0,
  askLevels: 0,
  tickerMsgs: 0,
  tickerSeq: 0, // seq of the last ticker of the chosen symbol
  trades: 0,
  messages: 0,
  msgsPerSec: 0,
  badLines: 0,
  opens: 0,
  reconnects: 0,
  resumed: {}, // symbol -> "exact" | "snapshot", from the last resume ack
  rttMs: null,
  lastError: null,
  notices: 0,
  errors: [], // uncaught script errors
  debug: {
    /**
     * corrupt adds to the local book a best bid the server never sent (a
     * price with one digit more than the best bid's), so that the next
     * checksum fails and the page has to resync.
     */
    corrupt() {
      const side = S.book && (S.book.bids.levels.length ? S.book.bids : S.book.asks);
      const p = side && side.levels.length ? side.levels[0].p : '1';
      if (side) side.set(p.includes('.') ? p + '1' : p + '.1', '1');
    },
    /** drop closes the socket as a network failure would. */
    drop() { conn.drop('dropped by debug.drop'); },
  },
};
window.marketd = pub;
addEventListener('error', (e) => pub.errors.push(String(e.message || e)));
addEventListener('unhandledrejection', (e) => pub.errors.push(String(e.reason)));
addEventListener('securitypolicyviolation', (e) => pub.errors.push(`CSP blocked ${e.blockedURI} (${e.violatedDirective})`));

// ---- connection ------------------------------------------------------------

const wsURL = new URL('v1/ws', location.href);
wsURL.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
// With token authentication on, open the page as /?token=...: the page
// passes the token on to the WebSocket (browsers cannot set its headers).
const pageToken = new URLSearchParams(location.search).get('token');
if (pageToken) wsURL.searchParams.set('token', pageToken);

const conn = new Connection(wsURL.href, {
  onopen() {
    pub.opens = conn.opens;
    pub.reconnects = Math.max(0, conn.opens - 1);
    send({ op: 'subscribe', channel: 'ticker', symbols: ['*'] });
    send({ op: 'subscribe', channel: 'trades', symbols: ['*'] });
    if (S.symbol) subscribeBook(true);
  },
  onmessage(msg, n) {
    pub.messages++;
    S.rate.msgs++;
    S.rate.bytes += n;
    handle(msg);
  },
  onbadline() { pub.badLines++; },
  onstatus(state, info) {
    pub.connState = state;
    pub.connected = state === 'open';
    setConnBadge(state, info);
    if (state !== 'open') {
      S.ops.clear();
      if (S.book && pub.checksumState === 'ok') setChecksum('resyncing');
    }
  },
  onpong(rtt) { pub.rttMs = Math.round(rtt * 10) / 10; S.dirty.bar = true; },
});

function send(op) {
  const id = conn.send(op);
  if (id) S.ops.set(id, op);
  return id;
}

// ---- messages --------------------------------------------------------------

function handle(msg) {
  switch (msg.type) {
    case 'snapshot':
    case 'update':
      if (msg.channel === undefined || msg.channel === 'book') onBook(msg);
      break;
    case 'ticker': onTicker(msg); break;
    case 'trade': onTrade(msg); break;
    case 'ack': onAck(msg); break;
    case 'error': onError(msg); break;
    case 'notice': onNotice(msg); break;
    default: break; // pong is handled by the connection; unknown types are ignored
  }
}

function onAck(msg) {
  const op = S.ops.get(msg.id);
  S.ops.delete(msg.id);
  if (msg.resumed) Object.assign(pub.resumed, msg.resumed);
  // An exact resume continues the stream from the verified book held: it is
  // good as it is, whether or not anything was missed. ("snapshot": the
  // snapshot that follows ends the resync.)
  const book = S.book;
  if (op && op.op === 'subscribe' && op.channel === 'book' && book && op.symbols[0] === book.symbol &&
      msg.resumed && msg.resumed[book.symbol] === 'exact' && book.seq > 0) {
    S.pending = null;
    setChecksum('ok');
  }
}

function onError(msg) {
  const op = S.ops.get(msg.id);
  S.ops.delete(msg.id);
  pub.lastError = `${msg.code}: ${msg.message || ''}`;
  showNotice(`Server error ${msg.code}${msg.message ? ': ' + msg.message : ''}`);
  // A book for a symbol the server does not know yet (the feed is starting): try again.
  if (op && op.op === 'subscribe' && op.channel === 'book' && op.symbols[0] === S.symbol) {
    S.bookSub = 0;
    clearTimeout(S.resyncTimer);
    S.resyncTimer = setTimeout(() => { if (conn.open && !S.bookSub) subscribeBook(false); }, 2000);
  }
}

function onNotice(msg) {
  pub.notices++;
  const text = msg.code === 'conflated'
    ? `Falling behind: the server merges ${msg.symbol || ''} updates until the page catches up`
    : `${msg.code || 'notice'}: ${msg.message || ''}`;
  showNotice(text);
}

function showNotice(text) {
  $('bar-notice').textContent = text;
  S.noticeUntil = performance.now() + NOTICE_MS;
}

function notePrice(sym, p) {
  if (typeof p !== 'string') return;
  const d = Math.min(8, fracDigits(p));
  if (d > (S.pxDec.get(sym) ?? -1)) { S.pxDec.set(sym, d); S.dirty.ladder = S.dirty.stats = S.dirty.strip = true; }
}

function noteSize(sym, s) {
  if (typeof s !== 'string') return;
  const d = Math.min(8, fracDigits(s));
  if (d > (S.szDec.get(sym) ?? -1)) { S.szDec.set(sym, d); S.dirty.ladder = true; }
}

const pxDec = (sym) => S.pxDec.get(sym) ?? 2;
const szDec = (sym) => S.szDec.get(sym) ?? 2;

function onBook(msg) {
  const book = S.book;
  if (!book || msg.symbol !== book.symbol) return; // a stream of a symbol left behind
  if (msg.depth !== undefined && msg.depth !== book.depth) return;
  for (const side of [msg.bids, msg.asks]) {
    if (!side) continue;
    for (const [p, s] of side) { notePrice(book.symbol, p); if (s !== '0') noteSize(book.symbol, s); }
  }
  if (msg.type === 'snapshot') {
    book.snapshot(msg);
    pub.snapshots++;
    S.pending = null;
    verify(msg);
    return;
  }
  if (book.seq === 0) return; // waiting for the snapshot
  if (msg.prev_seq !== book.seq) {
    if (S.pending) return; // messages of the stream being replaced
    pub.gaps++;
    resync('gap', true);
    return;
  }
  book.update(msg);
  pub.updates++;
  S.pending = null;
  verify(msg);
}

function verify(msg) {
  const book = S.book;
  if (book.checksum() === msg.checksum >>> 0 && msg.checksum !== undefined) {
    pub.verified++;
    pub.lastSeq = book.seq;
    pub.bidLevels = book.bids.levels.length;
    pub.askLevels = book.asks.levels.length;
    setChecksum('ok');
  } else {
    pub.mismatches++;
    resync('checksum', false);
  }
  S.dirty.ladder = S.dirty.depth = S.dirty.bar = true;
}

/**
 * resync resubscribes the book: after a gap with resume (the server replays
 * what was missed, or sends a snapshot), after a checksum mismatch from a
 * fresh snapshot, since the local book can no longer be trusted.
 */
function resync(why, resume) {
  pub.resyncs++;
  setChecksum('resyncing');
  if (!resume) S.book.seq = 0; // drop the book: only a snapshot will do
  S.pending = { since: performance.now(), mode: resume ? 'resume' : 'snapshot' };
  const wait = Math.max(0, S.lastResync + RESYNC_MIN_GAP_MS - performance.now());
  clearTimeout(S.resyncTimer);
  S.resyncTimer = setTimeout(() => {
    if (!conn.open || !S.book) return; // the reconnect will subscribe
    S.lastResync = performance.now();
    send({ op: 'unsubscribe', channel: 'book', symbols: [S.book.symbol] });
    subscribeBook(resume);
  }, wait);
}

/** subscribeBook subscribes the chosen symbol's book, resuming from the book held when asked and possible. */
function subscribeBook(resume) {
  const book = S.book;
  const op = { op: 'subscribe', channel: 'book', symbols: [book.symbol], depth: BOOK_DEPTH, interval: 'raw' };
  if (resume && book.seq > 0) {
    op.resume = { [book.symbol]: book.seq };
    S.pending = { since: performance.now(), mode: 'resume' };
    setChecksum('resyncing');
  } else {
    book.seq = 0;
    S.pending = { since: performance.now(), mode: 'snapshot' };
    if (pub.checksumState === 'ok') setChecksum('resyncing');
  }
  S.bookSub = send(op);
}

function onTicker(msg) {
  const sym = msg.symbol;
  if (!sym) return;
  pub.tickerMsgs++;
  if (!S.symbols.includes(sym)) addSymbols([sym]);
  const prev = S.tickers.get(sym);
  if (prev && prev.last && msg.last && prev.last !== msg.last) {
    S.lastDir.set(sym, Number(msg.last) > Number(prev.last) ? 1 : -1);
  }
  S.tickers.set(sym, msg);
  notePrice(sym, msg.last); notePrice(sym, msg.bid); notePrice(sym, msg.ask);
  if (sym === S.symbol) { pub.tickerSeq = msg.seq; S.dirty.stats = true; }
  S.dirty.strip = S.dirty.picker = true;
}

function onTrade(msg) {
  const sym = msg.symbol;
  if (!sym || typeof msg.price !== 'string') return;
  pub.trades++;
  S.rate.trades += sym === S.symbol ? 1 : 0;
  notePrice(sym, msg.price);
  noteSize(sym, msg.size);
  const tr = { p: msg.price, s: msg.size, buy: msg.side === 'buy', ts: msg.ts, id: msg.trade_id };
  let list = S.tape.get(sym);
  if (!list) S.tape.set(sym, (list = []));
  list.push(tr);
  if (list.length > TAPE_ROWS * 2) list.splice(0, list.length - TAPE_ROWS);
  chart.add(sym, msg.ts, Number(msg.price), Number(msg.size), tr.buy);
  if (sym === S.symbol) {
    S.newTrades.push(tr);
    // A hidden tab draws nothing: keep only what the tape can show.
    if (S.newTrades.length > TAPE_ROWS * 2) S.newTrades.splice(0, S.newTrades.length - TAPE_ROWS);
  }
}

// ---- symbols ---------------------------------------------------------------

function addSymbols(list) {
  const set = new Set(S.symbols);
  let added = false;
  for (const s of list) if (typeof s === 'string' && !set.has(s)) { set.add(s); added = true; }
  if (!added) return;
  S.symbols = [...set].sort();
  S.dirty.strip = S.dirty.picker = true;
  buildStrip();
}

/** chooseInitial selects the symbol of the URL's hash, or the last one seen here, or BTC-USD, or the first. */
function chooseInitial() {
  if (S.symbol || !S.symbols.length) return;
  let stored = null;
  try { stored = localStorage.getItem('marketd.symbol'); } catch { /* storage disabled */ }
  const want = [decodeURIComponent(location.hash.slice(1)), stored, 'BTC-USD'].find((s) => s && S.symbols.includes(s));
  select(want || S.symbols[0]);
}

async function loadSymbols() {
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    try {
      const r = await fetch('v1/symbols', { cache: 'no-store' });
      if (r.ok) {
        const body = await r.json();
        // {"symbols":[...]} as documented; a bare array is taken too.
        addSymbols((Array.isArray(body) ? body : body.symbols) || []);
      }
    } catch { /* the server is not up yet: the WebSocket shows the state */ }
    // Tickers may have named symbols meanwhile: choose among all known.
    if (S.symbols.length) { chooseInitial(); return; }
    await new Promise((res) => setTimeout(res, delay));
  }
}

function select(sym) {
  if (!sym || sym === S.symbol) return;
  if (S.book && conn.open) send({ op: 'unsubscribe', channel: 'book', symbols: [S.book.symbol] });
  S.symbol = pub.symbol = sym;
  S.book = new Book(sym, BOOK_DEPTH);
  S.pending = null;
  pub.tickerSeq = S.tickers.get(sym)?.seq ?? 0;
  pub.bidLevels = pub.askLevels = pub.lastSeq = 0;
  setChecksum('waiting');
  history.replaceState(null, '', '#' + encodeURIComponent(sym));
  try { localStorage.setItem('marketd.symbol', sym); } catch { /* private mode */ }
  $('picker-symbol').textContent = sym;
  if (conn.open) subscribeBook(false);
  chart.show(sym, S.interval, pxDec(sym));
  S.newTrades = [];
  rebuildTape();
  for (const k in S.dirty) S.dirty[k] = true;
  for (const el of $('ticker-strip').children) el.classList.toggle('sel', el.dataset.symbol === sym);
}

// ---- badges ----------------------------------------------------------------

function setChecksum(state) {
  if (pub.checksumState === state) return;
  pub.checksumState = state;
  pub.checksumOK = state === 'ok';
  const el = $('checksum-status');
  el.dataset.state = state;
  el.textContent = state === 'ok' ? 'Checksum OK' : state === 'resyncing' ? 'Resyncing' : 'Checksum —';
}

function setConnBadge(state, info) {
  const el = $('conn-status');
  el.dataset.state = state;
  const text = {
    connecting: 'Connecting',
    open: 'Live',
    waiting: `Reconnecting in ${Math.ceil((info.retryMs || 0) / 1000)}s`,
    closed: 'Closed',
  }[state];
  $('conn-text').textContent = text;
  el.title = info.reason ? `Disconnected: ${info.reason}` : '';
}

// ---- drawing ---------------------------------------------------------------

/** Ladder keeps BOOK_DEPTH pre-built rows per side and rewrites only their text. */
class Ladder {
  constructor(el, side) {
    this.side = side; // 'bid' | 'ask'
    this.rows = [];
    this.prev = new Map(); // price -> size shown last frame (for the change flash)
    for (let i = 0; i < BOOK_DEPTH; i++) {
      const r = document.createElement('div');
      r.className = 'row empty';
      r.innerHTML = '<i class="bar"></i><span class="px"></span><span class="sz"></span><span class="tot"></span>';
      this.rows.push({ el: r, bar: r.children[0], px: r.children[1], sz: r.children[2], tot: r.children[3], p: '', s: '', t: '' });
      el.append(r);
    }
    if (side === 'ask') this.rows.reverse(); // best ask sits on the spread, at the bottom
  }

  draw(levels, maxTotal, pd, sd, flash) {
    let total = 0;
    const seen = new Map();
    for (let i = 0; i < this.rows.length; i++) {
      const row = this.rows[i];
      const lv = levels[i];
      if (!lv) {
        if (row.p !== '') {
          row.el.className = 'row empty';
          row.el.removeAttribute('data-testid');
          row.px.textContent = row.sz.textContent = row.tot.textContent = '';
          row.bar.style.transform = 'scaleX(0)';
          row.p = row.s = '';
        }
        continue;
      }
      total += lv.sz;
      seen.set(lv.p, lv.s);
      if (row.p === '') {
        row.el.className = 'row';
        row.el.dataset.testid = this.side + '-level';
      }
      if (row.p !== lv.p) row.px.textContent = fixed(lv.p, pd);
      if (row.p !== lv.p || row.s !== lv.s) row.sz.textContent = fixed(lv.s, sd);
      const t = num(total, sd);
      if (row.t !== t) row.tot.textContent = t;
      row.bar.style.transform = `scaleX(${maxTotal > 0 ? Math.min(1, total / maxTotal) : 0})`;
      if (flash) {
        // A level whose size changed (not one that just scrolled into view) flashes its size.
        const before = this.prev.get(lv.p);
        if (before !== undefined && before !== lv.s) {
          const up = Number(lv.s) > Number(before);
          row.sz.animate({ backgroundColor: [up ? 'rgba(46,189,133,0.3)' : 'rgba(246,70,93,0.3)', 'rgba(0,0,0,0)'] }, { duration: 350, easing: 'ease-out' });
        }
      }
      row.p = lv.p; row.s = lv.s; row.t = t;
    }
    this.prev = seen;
  }
}

const asks = new Ladder($('asks'), 'ask');
const bids = new Ladder($('bids'), 'bid');
const depth = new DepthChart($('depth-chart'), $('depth-tip'));
const chart = new PriceChart($('price-chart'), $('chart-empty'));

function drawLadder() {
  const book = S.book;
  const b = book ? book.bids.levels.slice(0, BOOK_DEPTH) : [];
  const a = book ? book.asks.levels.slice(0, BOOK_DEPTH) : [];
  const sum = (l) => l.reduce((t, x) => t + x.sz, 0);
  const maxTotal = Math.max(sum(b), sum(a));
  const pd = pxDec(S.symbol), sd = szDec(S.symbol);
  const live = pub.checksumState === 'ok';
  bids.draw(b, maxTotal, pd, sd, live);
  asks.draw(a, maxTotal, pd, sd, live);
  document.querySelector('.book-panel').classList.toggle('stale', !live && !!book && book.seq === 0);
  // Spread row: last trade price, then the spread.
  const t = S.tickers.get(S.symbol);
  const last = $('spread-last');
  const dir = S.lastDir.get(S.symbol) || 0;
  last.textContent = t && t.last ? fixed(t.last, pd) + (dir > 0 ? ' ↑' : dir < 0 ? ' ↓' : '') : '—';
  last.className = 'num ' + (dir > 0 ? 'up' : dir < 0 ? 'down' : '');
  if (b.length && a.length) {
    const spread = a[0].px - b[0].px, mid = (a[0].px + b[0].px) / 2;
    $('spread-value').textContent = num(spread, pd);
    const bps = (spread / mid) * 1e4;
    $('spread-bps').textContent = `${num(bps, bps < 1 ? 3 : 1)} bps`;
  } else {
    $('spread-value').textContent = '—';
    $('spread-bps').textContent = '';
  }
}

function drawStats() {
  const sym = S.symbol, t = S.tickers.get(sym), pd = pxDec(sym);
  const set = (id, text, cls) => { const el = $(id); el.textContent = text; if (cls !== undefined) el.className = 'num ' + cls; };
  if (!t) {
    for (const id of ['stat-last', 'stat-change', 'stat-high', 'stat-low', 'stat-volume', 'stat-bidask']) set(id, '—');
    return;
  }
  const dir = S.lastDir.get(sym) || 0;
  set('stat-last', t.last ? fixed(t.last, pd) : '—', dir > 0 ? 'up' : dir < 0 ? 'down' : '');
  const ch = change(t);
  if (ch) {
    set('stat-change', `${ch.abs >= 0 ? '+' : ''}${num(ch.abs, pd)}  ${ch.pct >= 0 ? '+' : ''}${num(ch.pct, 2)}%`, ch.abs >= 0 ? 'up' : 'down');
  } else set('stat-change', '—', '');
  set('stat-high', t.high_24h ? fixed(t.high_24h, pd) : '—');
  set('stat-low', t.low_24h ? fixed(t.low_24h, pd) : '—');
  set('stat-volume', t.volume_24h ? `${compact(Number(t.volume_24h))} ${sym.split(/[-/]/)[0]}` : '—');
  set('stat-bidask', `${t.bid ? fixed(t.bid, pd) : '—'} / ${t.ask ? fixed(t.ask, pd) : '—'}`);
  document.title = `${t.last ? fixed(t.last, pd) + ' ' : ''}${sym} · marketd`;
}

/** change returns the 24h change of a ticker, or null without a last price or an open. */
function change(t) {
  if (!t || !t.last || !t.open_24h) return null;
  const last = Number(t.last), open = Number(t.open_24h);
  if (!(open > 0)) return null;
  return { abs: last - open, pct: ((last - open) / open) * 100 };
}

function buildStrip() {
  const strip = $('ticker-strip');
  const have = new Map([...strip.children].map((el) => [el.dataset.symbol, el]));
  for (const sym of S.symbols) {
    if (have.has(sym)) continue;
    const el = document.createElement('button');
    el.type = 'button';
    el.className = 'tk';
    el.dataset.symbol = sym;
    el.dataset.testid = 'ticker-item';
    el.innerHTML = '<b></b><span class="px num">—</span><span class="chg num"></span>';
    el.firstChild.textContent = sym;
    el.addEventListener('click', () => select(sym));
    have.set(sym, el);
  }
  strip.replaceChildren(...S.symbols.map((s) => have.get(s)));
  for (const el of strip.children) el.classList.toggle('sel', el.dataset.symbol === S.symbol);
}

function drawStrip() {
  for (const el of $('ticker-strip').children) {
    const sym = el.dataset.symbol, t = S.tickers.get(sym);
    if (!t) continue;
    const px = el.children[1], chg = el.children[2];
    const text = t.last ? fixed(t.last, pxDec(sym)) : t.bid ? fixed(t.bid, pxDec(sym)) : '—';
    if (px.textContent !== text) {
      const dir = S.lastDir.get(sym) || 0;
      px.className = 'px num ' + (dir > 0 ? 'up' : dir < 0 ? 'down' : '');
      px.textContent = text;
    }
    const ch = change(t);
    chg.textContent = ch ? `${ch.pct >= 0 ? '+' : ''}${num(ch.pct, 2)}%` : '';
    chg.className = 'chg num ' + (ch ? (ch.pct >= 0 ? 'up' : 'down') : '');
  }
}

function rebuildTape() {
  const tape = $('tape');
  tape.replaceChildren();
  const list = (S.tape.get(S.symbol) || []).slice(-TAPE_ROWS);
  for (let i = list.length - 1; i >= 0; i--) tape.append(tradeRow(list[i], false));
}

function tradeRow(tr, fresh) {
  const r = document.createElement('div');
  r.className = 'row ' + (tr.buy ? 'buy' : 'sell');
  r.dataset.testid = 'trade-row';
  r.innerHTML = '<span class="px"></span><span class="sz"></span><span class="tm"></span>';
  r.children[0].textContent = fixed(tr.p, pxDec(S.symbol));
  r.children[1].textContent = fixed(tr.s, szDec(S.symbol));
  r.children[2].textContent = hms(tr.ts);
  if (fresh) r.animate({ backgroundColor: [tr.buy ? 'rgba(46,189,133,0.25)' : 'rgba(246,70,93,0.25)', 'transparent'] }, { duration: 600 });
  return r;
}

function drawTape() {
  const tape = $('tape');
  const add = S.newTrades.slice(-TAPE_ROWS);
  S.newTrades = [];
  const frag = document.createDocumentFragment();
  for (let i = add.length - 1; i >= 0; i--) frag.append(tradeRow(add[i], true));
  tape.prepend(frag);
  while (tape.childElementCount > TAPE_ROWS) tape.lastElementChild.remove();
}

function drawPicker() {
  const q = $('picker-search').value.trim().toUpperCase();
  const ul = $('picker-list');
  const items = S.symbols.filter((s) => s.toUpperCase().includes(q));
  ul.replaceChildren(...items.map((sym) => {
    const li = document.createElement('li');
    li.role = 'option';
    li.dataset.symbol = sym;
    li.setAttribute('aria-selected', String(sym === S.symbol));
    const t = S.tickers.get(sym), ch = change(t);
    li.innerHTML = '<b></b><span class="num"></span><span class="num"></span>';
    li.children[0].textContent = sym;
    li.children[1].textContent = t && t.last ? fixed(t.last, pxDec(sym)) : '—';
    li.children[2].textContent = ch ? `${ch.pct >= 0 ? '+' : ''}${num(ch.pct, 2)}%` : '';
    li.children[2].className = 'num ' + (ch ? (ch.pct >= 0 ? 'up' : 'down') : '');
    return li;
  }));
}

function drawBar() {
  const r = S.rate;
  $('bar-seq').textContent = `seq ${pub.lastSeq || '—'}`;
  $('bar-rate').textContent = `${num(r.msgsPerSec, 0)} msg/s · ${compact(r.bytesPerSec || 0)}B/s`;
  $('bar-verified').textContent = `${pub.verified.toLocaleString('en-US')} verified · ${pub.resyncs} resyncs`;
  $('bar-rtt').textContent = pub.rttMs == null ? 'rtt —' : `rtt ${num(pub.rttMs, 1)} ms`;
  $('trades-rate').textContent = `${num(r.tradesPerSec, 1)} trades/s`;
}

function frame(now) {
  requestAnimationFrame(frame);
  if (now - S.rate.t >= 1000) {
    const dt = (now - S.rate.t) / 1000;
    S.rate.msgsPerSec = S.rate.msgs / dt;
    S.rate.bytesPerSec = S.rate.bytes / dt;
    S.rate.tradesPerSec = S.rate.trades / dt;
    pub.msgsPerSec = Math.round(S.rate.msgsPerSec);
    S.rate.msgs = S.rate.bytes = S.rate.trades = 0;
    S.rate.t = now;
    S.dirty.bar = true;
    if (S.noticeUntil && now > S.noticeUntil) { $('bar-notice').textContent = ''; S.noticeUntil = 0; }
    // A resume that never caught up: fall back to a fresh snapshot.
    if (S.pending && now - S.pending.since > RESYNC_TIMEOUT_MS && conn.open) resync('stalled', false);
  }
  if (S.dirty.ladder) { drawLadder(); S.dirty.ladder = false; }
  if (S.dirty.depth && now - S.lastDepthDraw >= DEPTH_REDRAW_MS) {
    const book = S.book;
    depth.set(book ? book.bids.levels.slice(0, BOOK_DEPTH) : [], book ? book.asks.levels.slice(0, BOOK_DEPTH) : [], pxDec(S.symbol));
    S.dirty.depth = false;
    S.lastDepthDraw = now;
  }
  if (S.dirty.stats) { drawStats(); S.dirty.stats = false; }
  if (S.dirty.strip) { drawStrip(); S.dirty.strip = false; }
  if (S.newTrades.length) drawTape();
  if (S.dirty.picker && !$('picker-panel').hidden) { drawPicker(); S.dirty.picker = false; }
  if (S.dirty.bar) { drawBar(); S.dirty.bar = false; }
}

// ---- controls --------------------------------------------------------------

function openPicker(open) {
  $('picker-panel').hidden = !open;
  $('picker-button').setAttribute('aria-expanded', String(open));
  if (open) {
    $('picker-search').value = '';
    drawPicker();
    $('picker-search').focus();
  }
}

$('picker-button').addEventListener('click', () => openPicker($('picker-panel').hidden));
$('picker-search').addEventListener('input', drawPicker);
$('picker-search').addEventListener('keydown', (e) => {
  if (e.key === 'Escape') openPicker(false);
  if (e.key === 'Enter') {
    const first = $('picker-list').firstElementChild;
    if (first) { select(first.dataset.symbol); openPicker(false); }
  }
});
$('picker-list').addEventListener('click', (e) => {
  const li = e.target.closest('li');
  if (li) { select(li.dataset.symbol); openPicker(false); }
});
document.addEventListener('click', (e) => {
  if (!$('picker-panel').hidden && !e.target.closest('.picker')) openPicker(false);
});
document.addEventListener('keydown', (e) => {
  if (e.key === '/' && document.activeElement?.tagName !== 'INPUT') { e.preventDefault(); openPicker(true); }
});
addEventListener('hashchange', () => {
  const sym = decodeURIComponent(location.hash.slice(1));
  if (S.symbols.includes(sym)) select(sym);
});
$('interval-seg').addEventListener('click', (e) => {
  const b = e.target.closest('button');
  if (!b) return;
  S.interval = Number(b.dataset.interval);
  for (const x of $('interval-seg').children) x.classList.toggle('on', x === b);
  chart.show(S.symbol, S.interval, pxDec(S.symbol));
});

$('bar-endpoint').textContent = wsURL.host;
conn.start();
loadSymbols();
requestAnimationFrame(frame);
