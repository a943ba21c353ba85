// Number display from the exact decimal strings of the protocol: padding and
// grouping are done on the text, so nothing is rounded through floating point.

/** fracDigits returns the number of fractional digits of a decimal string. */
export function fracDigits(s) {
  const i = s.indexOf('.');
  return i < 0 ? 0 : s.length - i - 1;
}

/**
 * fixed pads (or cuts) the fraction of a decimal string to dec digits and
 * groups the integer part by thousands: fixed("50000.1", 2) = "50,000.10".
 */
export function fixed(s, dec, group = true) {
  if (s == null || s === '') return '—';
  let neg = false;
  if (s[0] === '-') { neg = true; s = s.slice(1); }
  const i = s.indexOf('.');
  let ip = i < 0 ? s : s.slice(0, i);
  let fp = i < 0 ? '' : s.slice(i + 1);
  fp = fp.length >= dec ? fp.slice(0, dec) : fp + '0'.repeat(dec - fp.length);
  if (group && ip.length > 3) ip = ip.replace(/\B(?=(\d{3})+$)/g, ',');
  return (neg ? '-' : '') + ip + (dec > 0 ? '.' + fp : '');
}

/** num formats a float for display (derived values: totals, spreads, percentages). */
export function num(x, dec) {
  if (!Number.isFinite(x)) return '—';
  return x.toLocaleString('en-US', { minimumFractionDigits: dec, maximumFractionDigits: dec });
}

/** compact formats a large float as 1.23K / 4.56M / 7.89B. */
export function compact(x) {
  if (!Number.isFinite(x)) return '—';
  const a = Math.abs(x);
  if (a >= 1e9) return (x / 1e9).toFixed(2) + 'B';
  if (a >= 1e6) return (x / 1e6).toFixed(2) + 'M';
  if (a >= 1e4) return (x / 1e3).toFixed(2) + 'K';
  if (Number.isInteger(x)) return num(x, 0);
  return num(x, a >= 100 ? 2 : a >= 1 ? 3 : 4);
}

/** hms formats a Unix-microsecond timestamp as local HH:MM:SS. */
export function hms(tsMicros) {
  const d = new Date(Math.floor(tsMicros / 1000));
  return d.toLocaleTimeString('en-GB', { hour12: false });
}
