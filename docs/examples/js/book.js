// A client-side copy of one marketd book view, kept exactly as the server
// sends it: prices and sizes stay the strings received, because the checksum
// of protocol.md §3 covers exactly those strings. Levels are ordered by exact
// decimal comparison, never through floating point.
//
// Runs unchanged in browsers and in node (ES module, no dependencies).

/** Levels per side that the checksum covers. */
export const CHECKSUM_LEVELS = 10;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

const utf8 = new TextEncoder();

/** crc32 returns the CRC-32 (IEEE, as zlib) of the UTF-8 bytes of s, unsigned. */
export function crc32(s) {
  const b = utf8.encode(s);
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * cmpDec compares two non-negative decimal strings in marketd's canonical form
 * (no sign, no exponent, no trailing fractional zeros) exactly. It returns a
 * negative number, 0 or a positive number.
 */
export function cmpDec(a, b) {
  if (a === b) return 0;
  const ia = a.indexOf('.'), ib = b.indexOf('.');
  const ai = ia < 0 ? a : a.slice(0, ia), bi = ib < 0 ? b : b.slice(0, ib);
  if (ai.length !== bi.length) return ai.length - bi.length; // longer integer part is larger
  if (ai !== bi) return ai < bi ? -1 : 1;
  const af = ia < 0 ? '' : a.slice(ia + 1), bf = ib < 0 ? '' : b.slice(ib + 1);
  return af === bf ? 0 : af < bf ? -1 : 1;
}

/** isZero reports whether a decimal string is zero ("0", "0.0"). */
function isZero(s) {
  return /^0*(\.0*)?$/.test(s);
}

/** Side holds the levels of one side, best first, as [price, size] strings. */
export class Side {
  constructor(desc) {
    this.desc = desc; // bids: the best price is the highest
    this.levels = [];
  }

  /** find returns the index of price p, or -(insertion point) - 1. */
  find(p) {
    let lo = 0, hi = this.levels.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = this.desc ? cmpDec(p, this.levels[mid][0]) : cmpDec(this.levels[mid][0], p);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return -lo - 1;
  }

  /** set applies one [price, size] pair: size "0" removes the level. */
  set(p, s) {
    if (typeof p !== 'string' || typeof s !== 'string') throw new Error(`bad level [${p}, ${s}]`);
    const i = this.find(p);
    if (isZero(s)) {
      if (i >= 0) this.levels.splice(i, 1);
    } else if (i >= 0) {
      this.levels[i] = [p, s];
    } else {
      this.levels.splice(-i - 1, 0, [p, s]);
    }
  }

  /** best returns the best [price, size], or undefined on an empty side. */
  best() {
    return this.levels[0];
  }
}

/** Book is one book view: bids and asks. */
export class Book {
  constructor() {
    this.bids = new Side(true);
    this.asks = new Side(false);
  }

  /** apply applies the [price, size] changes of a snapshot or update. */
  apply(bids, asks) {
    for (const [p, s] of bids || []) this.bids.set(p, s);
    for (const [p, s] of asks || []) this.asks.set(p, s);
  }

  /**
   * checksumString is "bidPrice:bidSize:askPrice:askSize:..." over the first
   * 10 levels of each side (bid i, then ask i), without the final ':'.
   */
  checksumString() {
    const parts = [];
    for (let i = 0; i < CHECKSUM_LEVELS; i++) {
      if (i < this.bids.levels.length) parts.push(...this.bids.levels[i]);
      if (i < this.asks.levels.length) parts.push(...this.asks.levels[i]);
    }
    return parts.join(':');
  }

  /** checksum is the CRC-32 of checksumString, as the server computes it. */
  checksum() {
    return crc32(this.checksumString());
  }
}

/** addTiny returns the decimal string p + 0.00000001, exactly (BigInt). */
export function addTiny(p) {
  const [i, f = ''] = p.split('.');
  const digits = (BigInt(i + f.padEnd(8, '0').slice(0, 8)) + 1n).toString().padStart(9, '0');
  return `${digits.slice(0, -8)}.${digits.slice(-8)}`.replace(/\.?0+$/, '');
}
