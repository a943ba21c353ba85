// CRC-32 with the IEEE polynomial (as zlib and Go's hash/crc32.ChecksumIEEE),
// the checksum of protocol.md §3.

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

const utf8 = new TextEncoder();

/** crc32 returns the CRC-32 (IEEE) of the UTF-8 bytes of s as an unsigned integer. */
export function crc32(s) {
  let c = 0xffffffff;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch > 0x7f) return crc32Bytes(utf8.encode(s)); // not ASCII: hash the UTF-8 bytes
    c = TABLE[(c ^ ch) & 0xff] ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

function crc32Bytes(b) {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
