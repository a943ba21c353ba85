// A client-side L2 book of one subscription (symbol, depth), kept exactly as
// the server sends it: prices and sizes stay the strings received, so that the
// checksum of protocol.md §3 can be computed from them.

import { crc32 } from './crc32.js';

/**
 * cmpDec compares two non-negative decimal strings in canonical form (no sign,
 * no exponent, no leading or trailing zeros beyond one integer digit) exactly,
 * without going through floating point. It returns <0, 0 or >0.
 */
export function cmpDec(a, b) {
  if (a === b) return 0;
  const ia = a.indexOf('.'), ib = b.indexOf('.');
  const la = ia < 0 ? a.length : ia, lb = ib < 0 ? b.length : ib;
  if (la !== lb) return la - lb; // longer integer part is larger
  const ai = a.slice(0, la), bi = b.slice(0, lb);
  if (ai !== bi) return ai < bi ? -1 : 1;
  // Same integer part: fractions without trailing zeros compare as strings.
  const af = ia < 0 ? '' : a.slice(ia + 1), bf = ib < 0 ? '' : b.slice(ib + 1);
  return af === bf ? 0 : af < bf ? -1 : 1;
}

/** isZero reports whether a decimal string is zero ("0", "0.0", "0e0"). */
function isZero(s) {
  return s === '0' || Number(s) === 0;
}

/**
 * Side holds the levels of one side, best first, as {p, s, px, sz}: the price
 * and size strings received and their numeric values (for drawing only).
 */
class Side {
  constructor(desc) {
    this.desc = desc; // bids: best is the highest price
    this.levels = [];
  }

  /** find returns the index of price p, or -(insertion point) - 1. */
  find(p) {
    let lo = 0, hi = this.levels.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      let c = cmpDec(this.levels[mid].p, p);
      if (this.desc) c = -c;
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return -lo - 1;
  }

  /** set applies one [price, size] pair: size "0" removes the level. */
  set(p, s) {
    const i = this.find(p);
    if (isZero(s)) {
      if (i >= 0) this.levels.splice(i, 1);
      return;
    }
    const lv = { p, s, px: Number(p), sz: Number(s) };
    if (i >= 0) this.levels[i] = lv; else this.levels.splice(-i - 1, 0, lv);
  }

  replace(pairs) {
    this.levels = [];
    for (const [p, s] of pairs) this.set(p, s);
  }
}

/** Book is the verified state of one book subscription. */
export class Book {
  constructor(symbol, depth) {
    this.symbol = symbol;
    this.depth = depth;
    this.bids = new Side(true);
    this.asks = new Side(false);
    this.seq = 0; // seq of the last message applied; 0 before the snapshot
    this.ts = 0;
  }

  /** snapshot replaces the book with a snapshot message. */
  snapshot(msg) {
    this.bids.replace(msg.bids || []);
    this.asks.replace(msg.asks || []);
    this.seq = msg.seq;
    this.ts = msg.ts;
  }

  /** update applies an update message's level changes. */
  update(msg) {
    for (const [p, s] of msg.bids || []) this.bids.set(p, s);
    for (const [p, s] of msg.asks || []) this.asks.set(p, s);
    this.seq = msg.seq;
    this.ts = msg.ts;
  }

  /**
   * checksumString builds the string of protocol.md §3 from the first 10
   * levels of the view (1 for a depth-1 view): bid i then ask i, "price:size:",
   * without the final ':'.
   */
  checksumString() {
    const n = this.depth === 1 ? 1 : 10;
    const b = this.bids.levels, a = this.asks.levels;
    const parts = [];
    for (let i = 0; i < n; i++) {
      if (i < b.length) parts.push(b[i].p, b[i].s);
      if (i < a.length) parts.push(a[i].p, a[i].s);
    }
    return parts.join(':');
  }

  /** checksum returns the CRC-32 of checksumString. */
  checksum() {
    return crc32(this.checksumString());
  }
}
