package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The bbolt v1 file format, as far as checkPages needs it. bbolt writes its
// structures in the machine's byte order.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	elementSize      = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	metaSize         = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	metaChecksumSpan = 56 // the checksum covers everything before it
	bucketHeaderSize = 16 // root pgid u64, sequence u64
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	bucketLeafFlag   = 0x01
	maxTreeDepth     = 64
)

var ne = binary.NativeEndian

// checkPages reads the file without mmap and verifies the page structure that
// bbolt walks at a read-write open (when the freelist is not synced, it walks
// the whole tree in a goroutine of its own, where a bad page is an
// unrecoverable panic or a fault on unmapped memory): every reachable page is
// in bounds, names itself, is a branch or a leaf, is referenced once, has its
// elements inside the page, and its keys in order within their parent's range;
// inline buckets likewise. It returns an error wrapping ErrCorrupt for a bad
// structure, nil for a file bbolt itself will reject cleanly (bad meta pages)
// or a new file, and other errors for I/O failures.
func checkPages(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	c := &pageChecker{f: f, size: info.Size(), seen: make(map[uint64]bool)}
	root, ok := c.readMeta()
	if !ok {
		return nil // bbolt reports invalid meta pages itself, without panicking
	}
	if root == 0 {
		return nil
	}
	if err := c.walkPage(root, nil, nil, 0); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

type pageChecker struct {
	f        *os.File
	size     int64
	pageSize uint64
	high     uint64 // the meta's high-water page id
	seen     map[uint64]bool
}

// readMeta picks the valid meta page with the highest transaction id, as
// bbolt does, and returns the root bucket's page.
func (c *pageChecker) readMeta() (root uint64, ok bool) {
	var best struct{ txid, root, pgid, pageSize uint64 }
	found := false
	try := func(off int64) {
		buf := make([]byte, metaSize)
		if _, err := c.f.ReadAt(buf, off+pageHeaderSize); err != nil {
			return
		}
		if ne.Uint32(buf[0:]) != boltMagic || ne.Uint32(buf[4:]) != boltVersion {
			return
		}
		if metaChecksum(buf) != ne.Uint64(buf[56:]) {
			return
		}
		txid := ne.Uint64(buf[48:])
		if !found || txid > best.txid {
			found = true
			best.txid, best.root, best.pgid, best.pageSize = txid, ne.Uint64(buf[16:]), ne.Uint64(buf[40:]), uint64(ne.Uint32(buf[8:]))
		}
	}
	try(0)
	if found {
		try(int64(best.pageSize))
	} else {
		for ps := int64(1024); ps <= 65536; ps *= 2 {
			try(ps)
		}
	}
	if !found || best.pageSize < 512 {
		return 0, false
	}
	c.pageSize, c.high = best.pageSize, best.pgid
	return best.root, true
}

// metaChecksum is bbolt's checksum of a meta page's fields (buf starts at
// the meta, after the page header).
func metaChecksum(buf []byte) uint64 {
	h := fnv.New64a()
	h.Write(buf[:metaChecksumSpan])
	return h.Sum64()
}

// wholePageMax is the largest page span (a page and its overflow pages)
// that checkPages reads into memory at once; larger ones (big values) are
// read piecewise: the element table and the keys, never the values, so that
// the walk of a file of large queued messages does not allocate a copy of
// the file.
const wholePageMax = 64 << 10

// pageData is one page span under check: in memory, or read on demand.
type pageData interface {
	// size is the span's length as far as the file holds it.
	size() uint64
	// bytes returns n bytes at off, or an error when they are out of the span.
	bytes(off, n uint64) ([]byte, error)
}

// memPage is a page span read whole.
type memPage []byte

func (p memPage) size() uint64 { return uint64(len(p)) }

func (p memPage) bytes(off, n uint64) ([]byte, error) {
	if off > uint64(len(p)) || n > uint64(len(p))-off {
		return nil, errors.New("out of the page")
	}
	return p[off : off+n], nil
}

// filePage is a large page span read piece by piece.
type filePage struct {
	f    *os.File
	base int64
	n    uint64
}

func (p filePage) size() uint64 { return p.n }

func (p filePage) bytes(off, n uint64) ([]byte, error) {
	if off > p.n || n > p.n-off {
		return nil, errors.New("out of the page")
	}
	b := make([]byte, n)
	if _, err := p.f.ReadAt(b, p.base+int64(off)); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return b, nil
}

// readPage reads a page and its overflow pages, checking bounds, identity
// and that nothing references it twice.
func (c *pageChecker) readPage(id uint64) (pageData, error) {
	if id < 2 || id >= c.high {
		return nil, fmt.Errorf("page %d: out of bounds (high water %d)", id, c.high)
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := c.f.ReadAt(hdr, int64(id*c.pageSize)); err != nil {
		return nil, fmt.Errorf("page %d: read: %w", id, err)
	}
	if got := ne.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d: identifies as %d", id, got)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if id+overflow >= c.high {
		return nil, fmt.Errorf("page %d: overflow %d past high water %d", id, overflow, c.high)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, fmt.Errorf("page %d: multiple references", i)
		}
		c.seen[i] = true
	}
	span := (overflow + 1) * c.pageSize
	base := int64(id * c.pageSize)
	if span > wholePageMax {
		// As far as the file holds it: a short file is found out by the
		// reads of what lies past its end.
		return filePage{f: c.f, base: base, n: uint64(max(0, min(int64(span), c.size-base)))}, nil
	}
	buf := make([]byte, span)
	n, err := c.f.ReadAt(buf, base)
	if err != nil && !(errors.Is(err, io.EOF) && n >= pageHeaderSize) {
		return nil, fmt.Errorf("page %d: read: %w", id, err)
	}
	return memPage(buf[:n]), nil
}

func (c *pageChecker) walkPage(id uint64, lo, hi []byte, depth int) error {
	p, err := c.readPage(id)
	if err != nil {
		return err
	}
	return c.walkNode(p, id, lo, hi, depth)
}

// walkNode checks one branch or leaf page (p starts at its header) whose
// keys must lie in [lo, hi), and descends into children and nested buckets.
func (c *pageChecker) walkNode(p pageData, id uint64, lo, hi []byte, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth)
	}
	hdr, err := p.bytes(0, pageHeaderSize)
	if err != nil {
		return fmt.Errorf("page %d: truncated header", id)
	}
	flags, count := ne.Uint16(hdr[8:]), uint64(ne.Uint16(hdr[10:]))
	if flags != branchPageFlag && flags != leafPageFlag {
		return fmt.Errorf("page %d: invalid type %#x", id, flags)
	}
	elems, err := p.bytes(pageHeaderSize, count*elementSize)
	if err != nil {
		return fmt.Errorf("page %d: %d elements do not fit", id, count)
	}
	// elem returns the i-th element's header; slice the n bytes at pos
	// from the element.
	elem := func(i uint64) []byte { return elems[i*elementSize : (i+1)*elementSize] }
	slice := func(i, pos, n uint64) ([]byte, error) {
		b, err := p.bytes(pageHeaderSize+i*elementSize+pos, n)
		if err != nil {
			return nil, fmt.Errorf("page %d: element out of the page", id)
		}
		return b, nil
	}
	prev := lo
	for i := range count {
		h := elem(i)
		var key []byte
		if flags == branchPageFlag {
			key, err = slice(i, uint64(ne.Uint32(h)), uint64(ne.Uint32(h[4:])))
		} else {
			key, err = slice(i, uint64(ne.Uint32(h[4:])), uint64(ne.Uint32(h[8:])))
		}
		if err != nil {
			return err
		}
		if prev != nil && (bytes.Compare(prev, key) > 0 || (i > 0 && bytes.Equal(prev, key))) {
			return fmt.Errorf("page %d: key %d out of order", id, i)
		}
		if hi != nil && bytes.Compare(key, hi) >= 0 {
			return fmt.Errorf("page %d: key %d beyond its parent's range", id, i)
		}

		if flags == branchPageFlag {
			next := hi
			if i < count-1 {
				h2 := elem(i + 1)
				if next, err = slice(i+1, uint64(ne.Uint32(h2)), uint64(ne.Uint32(h2[4:]))); err != nil {
					return err
				}
			}
			if err := c.walkPage(ne.Uint64(h[8:]), key, next, depth+1); err != nil {
				return err
			}
			prev = key // the child's keys were checked against [key, next)
			continue
		}

		prev = key
		vpos, vlen := uint64(ne.Uint32(h[4:]))+uint64(ne.Uint32(h[8:])), uint64(ne.Uint32(h[12:]))
		if ne.Uint32(h)&bucketLeafFlag == 0 {
			// A value: only its bounds matter (it is not read).
			if off := pageHeaderSize + i*elementSize + vpos; off > p.size() || vlen > p.size()-off {
				return fmt.Errorf("page %d: element out of the page", id)
			}
			continue
		}
		if vlen > wholePageMax {
			return fmt.Errorf("page %d: bucket entry %d of %d bytes", id, i, vlen)
		}
		value, err := slice(i, vpos, vlen)
		if err != nil {
			return err
		}
		if len(value) < bucketHeaderSize {
			return fmt.Errorf("page %d: bucket entry %d too short", id, i)
		}
		root := ne.Uint64(value)
		if root == 0 { // inline bucket: its page follows the header
			if err := c.walkNode(memPage(bytes.Clone(value[bucketHeaderSize:])), id, nil, nil, depth+1); err != nil {
				return fmt.Errorf("inline bucket in %w", err)
			}
			continue
		}
		if err := c.walkPage(root, nil, nil, depth+1); err != nil {
			return err
		}
	}
	return nil
}
