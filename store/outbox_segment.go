package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Segment files are named seg-<first sequence number, 20 digits>.db. Each
// holds two buckets: msgs (8-byte big-endian sequence number → record) and
// meta (first and last sequence numbers).
const (
	segPrefix = "seg-"
	segSuffix = ".db"
)

var (
	be           = binary.BigEndian
	bucketMsgs   = []byte("msgs")
	bucketMeta   = []byte("meta")
	metaFirstKey = []byte("first")
	metaLastKey  = []byte("last")
)

// segment is one open segment file with its in-memory index.
type segment struct {
	first uint64
	path  string
	db    *bolt.DB
	// f is a read-only descriptor of the same file, for fstat before each
	// access and for reading a damaged file without the mmap (outbox_guard.go).
	f *os.File
	// size is the file size bbolt relies on: measured at open and after each
	// commit. A smaller file is damaged.
	size atomic.Int64
	// damaged: found damaged while open, waiting for the writer's salvage;
	// no transaction is started on it any more. poisoned: a fault hit inside
	// bbolt, whose handle is abandoned without Close.
	damaged, poisoned atomic.Bool
	closed            atomic.Bool // closeSegment was called
	damageKind        damageKind  // q.mu
	damageErr         error       // q.mu
	// sizes[i] is the counted size of entry first+i, 0 when it is not stored
	// (acknowledged, dropped, or never committed). 4 bytes per message.
	sizes     []uint32
	lo        int // sizes[:lo] are all 0
	live      int64
	liveBytes int64
	// written and writtenMsgs count what was appended since the segment was
	// created (or opened), for rotation.
	written     int64
	writtenMsgs int64
	dels        []uint64 // deletes not yet written
	sealed      bool     // takes no more appends (salvaged from a corrupt file)
}

func (s *segment) isLive(seq uint64) bool {
	return seq >= s.first && seq-s.first < uint64(len(s.sizes)) && s.sizes[seq-s.first] != 0
}

func segName(first uint64) string { return fmt.Sprintf("%s%020d%s", segPrefix, first, segSuffix) }

// parseSegName returns the first sequence number of a segment file name, and
// whether the name is a segment's (live, or moved aside when corrupt).
func parseSegName(name string) (first uint64, live, ok bool) {
	if !strings.HasPrefix(name, segPrefix) {
		return 0, false, false
	}
	rest := name[len(segPrefix):]
	i := strings.Index(rest, segSuffix)
	if i != 20 {
		return 0, false, false
	}
	n, err := strconv.ParseUint(rest[:i], 10, 64)
	if err != nil {
		return 0, false, false
	}
	tail := rest[i+len(segSuffix):]
	switch {
	case tail == "":
		return n, true, true
	case strings.HasPrefix(tail, ".corrupt-"):
		return n, false, true
	default:
		return 0, false, false
	}
}

// segOptions are the options of every segment file: no freelist sync with the
// hashmap freelist (see DESIGN.md), and a short lock wait.
func (q *Outbox) segOptions() Options {
	return Options{Logger: q.opts.Logger, Now: q.opts.Now, OpenTimeout: DefaultOpenTimeout}.withDefaults()
}

// load opens every segment in the directory, salvages corrupt ones and sets
// the next sequence number.
func (q *Outbox) load() error {
	ents, err := os.ReadDir(q.opts.Dir)
	if err != nil {
		return fmt.Errorf("outbox %s: %w", q.opts.Dir, err)
	}
	var (
		firsts  []uint64
		aside   = make(map[uint64]bool)
		highest uint64 // highest sequence number known to have been used
		corrupt bool
	)
	for _, e := range ents {
		first, live, ok := parseSegName(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		if live {
			firsts = append(firsts, first)
		} else {
			// A segment moved aside earlier: its first number was used (the
			// jump below was made when it was found).
			highest = max64(highest, first)
			aside[first] = true
		}
	}
	slices.Sort(firsts)
	ledger := q.readLedger()
	for _, first := range firsts {
		e, known := ledger[first]
		s, last, bad, err := q.openSegment(first, e, known)
		if err != nil {
			return err
		}
		if known {
			highest = max64(highest, e.last)
		}
		highest = max64(highest, max64(first, last))
		corrupt = corrupt || bad
		if s != nil {
			q.segs = append(q.segs, s)
		}
	}
	// A segment the ledger knew with stored messages whose file is gone.
	for first, e := range ledger {
		if e.live == 0 || slices.Contains(firsts, first) || aside[first] {
			continue
		}
		q.dropTruncated.Add(e.live)
		q.corruptSegs.Add(1)
		highest = max64(highest, e.last)
		corrupt = true
		q.log.Error("outbox segment file is missing: its messages are lost",
			"segment", filepath.Join(q.opts.Dir, segName(first)), "lost_truncated", e.live, "lost_counted", e.live)
	}
	q.nextSeq = highest + 1
	if corrupt {
		// The true end of a corrupt segment is unknown: jump past any number
		// it could have used, and make the jump durable with a new head
		// segment named after it.
		q.nextSeq = highest + outboxSeqJump
		s, err := q.createSegment(q.nextSeq)
		if err != nil {
			return err
		}
		q.segs = append(q.segs, s)
	}
	q.lastSeq = q.nextSeq - 1
	for _, s := range q.segs {
		q.depth += s.live
		q.bytes += s.liveBytes
	}
	q.ledgerDirty = true
	q.log.Info("outbox opened", "segments", len(q.segs), "depth", q.depth, "bytes", q.bytes, "next_seq", q.nextSeq)
	return nil
}

// openSegment opens one segment and builds its index. A corrupt one is
// salvaged (bad is true); a removed empty one gives a nil segment. e is what
// the ledger says of it, when known.
func (q *Outbox) openSegment(first uint64, e ledgerEntry, known bool) (s *segment, last uint64, bad bool, err error) {
	path := filepath.Join(q.opts.Dir, segName(first))
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		if known && e.live > 0 {
			// Not a file left by a crash while creating it: it held messages.
			s, last, err := q.salvage(path, first, e, known, fmt.Errorf("%w: the file is empty", ErrCorrupt))
			return s, last, true, err
		}
		// Killed while creating it: nothing was ever committed there.
		q.log.Warn("outbox: removing an empty segment file left by a crash", "segment", path)
		if err := os.Remove(path); err != nil {
			return nil, 0, false, fmt.Errorf("outbox %s: remove empty segment: %w", path, err)
		}
		return nil, 0, false, nil
	}
	db, err := openBolt(path, q.segOptions())
	if errors.Is(err, ErrCorrupt) {
		s, last, err := q.salvage(path, first, e, known, err)
		return s, last, true, err
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("outbox: %w", err)
	}
	s, err = newSegment(first, path, db)
	if err != nil {
		return nil, 0, false, err
	}
	s.written = s.size.Load() // rotate early rather than late after a restart
	dups := 0
	err = q.view(s, func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			if v := m.Get(metaLastKey); len(v) == 8 {
				last = be.Uint64(v)
			}
		}
		bk := tx.Bucket(bucketMsgs)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil // not ours: Read never sees it either (keys are 8 bytes)
			}
			seq := be.Uint64(k)
			if seq < first || seq-first > outboxSeqJump {
				return nil
			}
			if s.isLive(seq) {
				dups++ // the same key twice: a damaged page
				return nil
			}
			s.setSize(seq, int64(len(v)+8))
			last = max64(last, seq)
			return nil
		})
	})
	if err != nil {
		_ = q.closeSegment(s)
		if errors.Is(err, ErrSegmentDamaged) {
			s, last, err := q.salvage(path, first, e, known, err)
			return s, last, true, err
		}
		return nil, 0, false, fmt.Errorf("outbox %s: index: %w", path, err)
	}
	if dups > 0 {
		q.dropCorrupt.Add(uint64(dups))
		q.log.Error("outbox segment holds duplicate keys: counted as corrupt", "segment", path, "lost_corrupt", dups)
	}
	s.writtenMsgs = int64(last - first)
	return s, last, false, nil
}

// newSegment wraps an open bbolt file with the descriptor and size used to
// guard accesses to it.
func newSegment(first uint64, path string, db *bolt.DB) (*segment, error) {
	f, err := os.Open(path)
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			s := &segment{first: first, path: path, db: db, f: f}
			s.size.Store(fi.Size())
			return s, nil
		}
		_ = f.Close()
	}
	_ = db.Close()
	return nil, fmt.Errorf("outbox %s: open descriptor: %w", path, err)
}

// setSize records a stored entry in the index.
func (s *segment) setSize(seq uint64, size int64) {
	i := int(seq - s.first)
	if i >= len(s.sizes) {
		s.sizes = slices.Grow(s.sizes, i+1-len(s.sizes))[:i+1]
	}
	s.sizes[i] = uint32(size)
	s.live++
	s.liveBytes += size
	for s.lo < len(s.sizes) && s.sizes[s.lo] == 0 {
		s.lo++
	}
}

// createSegment creates a new segment file with its buckets and meta.
func (q *Outbox) createSegment(first uint64) (*segment, error) {
	path := filepath.Join(q.opts.Dir, segName(first))
	db, err := openBolt(path, q.segOptions())
	if err != nil {
		return nil, fmt.Errorf("outbox: create segment: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketMsgs); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		var v [8]byte
		be.PutUint64(v[:], first)
		if err := m.Put(metaFirstKey, v[:]); err != nil {
			return err
		}
		return m.Put(metaLastKey, v[:])
	})
	if err == nil {
		err = syncDir(q.opts.Dir)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("outbox %s: create segment: %w", path, err)
	}
	return newSegment(first, path, db)
}

// salvage handles a segment found corrupt at open: it reads every record it
// can find in the raw pages (checksums tell good records from garbage),
// moves the file aside, and writes what it found into a fresh file of the
// same name, which takes no more appends. Records the ledger says were
// stored and that cannot be recovered are counted as lost by cause. It never
// fails for the content, only for I/O.
func (q *Outbox) salvage(path string, first uint64, e ledgerEntry, known bool, cause error) (*segment, uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("outbox %s: read corrupt segment: %w", path, err)
	}
	res := salvageRecords(data, first)
	recs, loss := res.account(e, known, q.opts.Now().UnixNano(), fileShrunk(data))
	aside, err := moveAside(path, q.opts.Now())
	if err != nil {
		return nil, 0, fmt.Errorf("outbox: corrupt segment: %w (%w)", err, cause)
	}
	q.corruptSegs.Add(1)
	q.salvaged.Add(uint64(len(recs)))
	q.countLoss(loss)
	expected := "unknown (no ledger entry)"
	if known {
		expected = strconv.FormatUint(e.live, 10)
	}
	q.log.Error("outbox segment is corrupt: kept the readable messages, moved the file aside",
		"segment", path, "moved_to", aside, "expected", expected, "salvaged", len(recs),
		"lost_truncated", loss.truncated, "lost_corrupt", loss.corrupt,
		"lost_checksum", loss.checksum, "lost_expired", loss.expired,
		"lost_counted", loss.total(), "error", cause)
	last := first
	if known {
		last = e.last
	}
	if len(recs) == 0 {
		return nil, last, nil
	}
	s, err := q.writeSalvaged(path, first, recs)
	if err != nil {
		return nil, 0, err
	}
	return s, max64(last, be.Uint64(recs[len(recs)-1].key)), nil
}

// writeSalvaged creates a sealed segment at path holding recs (in order).
func (q *Outbox) writeSalvaged(path string, first uint64, recs []rawRecord) (*segment, error) {
	s, err := q.createSegment(first)
	if err != nil {
		return nil, err
	}
	err = q.update(s, func(tx *bolt.Tx) error {
		bk, m := tx.Bucket(bucketMsgs), tx.Bucket(bucketMeta)
		if bk == nil || m == nil {
			return errBucketMissing
		}
		bk.FillPercent = 1
		for _, r := range recs {
			if err := bk.Put(r.key, r.value); err != nil {
				return err
			}
		}
		return m.Put(metaLastKey, recs[len(recs)-1].key)
	})
	if err != nil {
		_ = q.closeSegment(s)
		return nil, fmt.Errorf("outbox %s: write salvaged messages: %w", path, err)
	}
	for _, r := range recs {
		s.setSize(be.Uint64(r.key), int64(len(r.key)+len(r.value)))
	}
	s.sealed = true
	return s, nil
}

type rawRecord struct{ key, value []byte }

// badKind says why a record-shaped element of a damaged file was not
// recovered.
type badKind uint8

const (
	// badChecksum: its value (or checksum) is damaged; its key is as stored.
	badChecksum badKind = iota + 1
	// badKey: its key is damaged (one changed byte explains the checksum).
	badKey
)

// salvageResult is what salvageRecords found in a damaged file.
type salvageResult struct {
	// good holds every record with a valid checksum, by sequence number
	// (old page versions hold the same bytes: the first found is kept).
	good map[uint64][]byte
	// bad holds, by the sequence number of its key, each record-shaped
	// element that failed its checksum and has no good copy.
	bad map[uint64]badKind
}

// salvageRecords scans the raw pages of a bbolt file for leaf elements that
// are outbox records of the segment starting at first (8-byte key in range,
// value with a valid checksum), including inline buckets. It trusts nothing
// in the file: every offset is bounds-checked. Old page versions can
// resurrect acknowledged records: account, with a ledger entry, drops those.
func salvageRecords(data []byte, first uint64) salvageResult {
	pageSize := os.Getpagesize()
	if len(data) >= pageHeaderSize+metaSize && ne.Uint32(data[pageHeaderSize:]) == boltMagic {
		if ps := int(ne.Uint32(data[pageHeaderSize+8:])); ps >= 512 && ps <= 1<<16 && ps&(ps-1) == 0 {
			pageSize = ps
		}
	}
	res := salvageResult{good: make(map[uint64][]byte), bad: make(map[uint64]badKind)}
	var leaf func(p []byte, depth int)
	leaf = func(p []byte, depth int) {
		if depth > 4 || len(p) < pageHeaderSize || ne.Uint16(p[8:]) != leafPageFlag {
			return
		}
		count := int(ne.Uint16(p[10:]))
		if pageHeaderSize+count*elementSize > len(p) {
			return
		}
		for i := range count {
			e := pageHeaderSize + i*elementSize
			flags := ne.Uint32(p[e:])
			pos, ksize, vsize := uint64(ne.Uint32(p[e+4:])), uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
			start := uint64(e) + pos
			if start+ksize+vsize > uint64(len(p)) {
				continue
			}
			k, v := p[start:start+ksize], p[start+ksize:start+ksize+vsize]
			if flags&bucketLeafFlag != 0 {
				if len(v) > bucketHeaderSize && ne.Uint64(v) == 0 {
					leaf(v[bucketHeaderSize:], depth+1) // inline bucket
				}
				continue
			}
			if len(k) != 8 {
				continue
			}
			seq := be.Uint64(k)
			if seq < first || seq-first > outboxSeqJump {
				continue
			}
			if len(v) >= recHeaderSize && be.Uint32(v) == recordCRC(k, v) {
				if _, ok := res.good[seq]; !ok {
					res.good[seq] = slices.Clone(v)
				}
				continue
			}
			if _, ok := res.bad[seq]; !ok || res.bad[seq] == badKey {
				kind := badChecksum
				if keyDamaged(k, v) {
					kind = badKey
				}
				res.bad[seq] = kind
			}
		}
	}
	for off := 0; off+pageHeaderSize <= len(data); off += pageSize {
		id := ne.Uint64(data[off:])
		if id != uint64(off/pageSize) || id < 2 {
			continue
		}
		overflow := int(ne.Uint32(data[off+12:]))
		end := off + (overflow+1)*pageSize
		if overflow < 0 || end > len(data) || end < off {
			end = min(len(data), off+pageSize)
		}
		leaf(data[off:end], 0)
	}
	for seq := range res.good {
		delete(res.bad, seq)
	}
	return res
}

// records returns the good records with a sequence number of at least from,
// in order, without the expired ones (counted in expired).
func (r salvageResult) records(from uint64, now int64) (recs []rawRecord, expired uint64) {
	seqs := make([]uint64, 0, len(r.good))
	for seq := range r.good {
		if seq >= from {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	recs = make([]rawRecord, 0, len(seqs))
	for _, seq := range seqs {
		v := r.good[seq]
		if recExpired(v, now) {
			expired++
			continue
		}
		k := make([]byte, 8)
		be.PutUint64(k, seq)
		recs = append(recs, rawRecord{key: k, value: v})
	}
	return recs, expired
}

// account decides, for a segment damaged at open, what is kept and what was
// lost by cause. With the ledger's entry e (known), records below its lowest
// stored number are acknowledged ones brought back by old pages (dropped,
// not counted), and every record it says was stored and that is not found
// is lost: checksum when a damaged value sits under its key, truncated when
// the file is shorter than bbolt had made it, corrupt otherwise (its key or
// its page damaged). Without it, only what is found can be counted: each
// damaged key as corrupt, each damaged value as checksum.
func (r salvageResult) account(e ledgerEntry, known bool, now int64, shrunk bool) ([]rawRecord, lossCounts) {
	var loss lossCounts
	from := uint64(0)
	if known {
		from = e.lo
	}
	recs, expired := r.records(from, now)
	loss.expired = expired
	if !known {
		for _, kind := range r.bad {
			if kind == badKey {
				loss.corrupt++
			} else {
				loss.checksum++
			}
		}
		return recs, loss
	}
	var found uint64
	for seq := range r.good {
		if seq >= e.lo && seq <= e.last {
			found++
		}
	}
	for seq, kind := range r.bad {
		if kind == badChecksum && seq >= e.lo && seq <= e.last {
			loss.checksum++
		}
	}
	if e.live > found+loss.checksum {
		rest := e.live - found - loss.checksum
		if shrunk {
			loss.truncated = rest
		} else {
			loss.corrupt = rest
		}
	}
	return recs, loss
}

// fileShrunk tells whether a bbolt file is shorter than its newest valid
// meta page says it was grown to (or too short to hold its meta pages).
func fileShrunk(data []byte) bool {
	var best struct{ txid, pgid, pageSize uint64 }
	found := false
	try := func(off int) {
		if off < 0 || off+pageHeaderSize+metaSize > len(data) {
			return
		}
		buf := data[off+pageHeaderSize : off+pageHeaderSize+metaSize]
		if ne.Uint32(buf) != boltMagic || ne.Uint32(buf[4:]) != boltVersion || metaChecksum(buf) != ne.Uint64(buf[56:]) {
			return
		}
		if txid := ne.Uint64(buf[48:]); !found || txid > best.txid {
			found = true
			best.txid, best.pgid, best.pageSize = txid, ne.Uint64(buf[40:]), uint64(ne.Uint32(buf[8:]))
		}
	}
	try(0)
	for ps := 1024; ps <= 65536; ps *= 2 {
		try(ps)
	}
	if !found {
		return len(data) < 2*os.Getpagesize()
	}
	return best.pageSize > 0 && best.pgid <= 1<<40 && uint64(len(data)) < best.pgid*best.pageSize
}
