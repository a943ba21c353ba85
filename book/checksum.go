package book

import (
	"hash/crc32"
	"sync"
)

// ChecksumLevels is the number of levels per side that a checksum covers.
const ChecksumLevels = 10

// checksumBufSize holds the longest checksum string: 2×ChecksumLevels
// levels of two numbers of at most 21 characters and two colons each.
const checksumBufSize = 2 * ChecksumLevels * (2*21 + 2)

// Checksum returns the protocol checksum (protocol.md §3) of a book given
// best first: the CRC-32 (IEEE) of the string AppendChecksumString builds
// from at most the first ChecksumLevels levels of each side. An empty book
// has checksum 0.
func Checksum(bids, asks []Level) uint32 {
	buf := checksumBufs.Get().(*[checksumBufSize]byte)
	sum := crc32.ChecksumIEEE(AppendChecksumString(buf[:0], bids, asks))
	checksumBufs.Put(buf)
	return sum
}

// checksumBufs holds buffers for Checksum: crc32 hashes through a function
// value, so a buffer on the stack would escape and cost an allocation per call.
var checksumBufs = sync.Pool{New: func() any { return new([checksumBufSize]byte) }}

// AppendChecksumString appends to dst the string that Checksum hashes: for
// i = 0..9, "bidPrice:bidSize:" if bid i exists, then "askPrice:askSize:" if
// ask i exists, with the final ':' dropped. Numbers are in their canonical
// text (Num.Append), exactly as sent on the wire.
func AppendChecksumString(dst []byte, bids, asks []Level) []byte {
	start := len(dst)
	for i := range ChecksumLevels {
		if i < len(bids) {
			dst = appendChecksumLevel(dst, bids[i].Price, bids[i].Size)
		}
		if i < len(asks) {
			dst = appendChecksumLevel(dst, asks[i].Price, asks[i].Size)
		}
	}
	if len(dst) > start {
		dst = dst[:len(dst)-1]
	}
	return dst
}

func appendChecksumLevel(dst []byte, price, size Num) []byte {
	dst = price.Append(dst)
	dst = append(dst, ':')
	dst = size.Append(dst)
	return append(dst, ':')
}

// checksum returns the checksum of the book's view of the best n levels per
// side (n <= ChecksumLevels), without building Level slices.
func (b *Book) checksum(n int) uint32 {
	dst := b.sumBuf[:0]
	bids, asks := b.bids.levels, b.asks.levels
	for i := range n {
		if i < len(bids) {
			lv := &bids[len(bids)-1-i]
			dst = appendChecksumLevel(dst, lv.Price, lv.Size)
		}
		if i < len(asks) {
			lv := &asks[len(asks)-1-i]
			dst = appendChecksumLevel(dst, lv.Price, lv.Size)
		}
	}
	b.sumBuf = dst // keep what append grew
	if len(dst) > 0 {
		dst = dst[:len(dst)-1]
	}
	return crc32.ChecksumIEEE(dst)
}

// checksumDepth returns how many levels per side the checksum of the view of
// the given depth covers.
func checksumDepth(depth int) int {
	if depth <= 0 || depth > ChecksumLevels {
		return ChecksumLevels
	}
	return depth
}

// Checksum returns the protocol checksum of the book's view of the given
// depth (0 or less: the full book) as it is now. The checksums of the depth-1
// view and of the top 10 are cached between changes.
func (b *Book) Checksum(depth int) uint32 {
	n := checksumDepth(depth)
	switch n {
	case 1, ChecksumLevels:
		if !b.sumValid {
			b.sum1, b.sum10, b.sumValid = b.checksum(1), b.checksum(ChecksumLevels), true
		}
		if n == 1 {
			return b.sum1
		}
		return b.sum10
	}
	return b.checksum(n)
}
