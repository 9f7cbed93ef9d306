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
		}
	}
	slices.Sort(firsts)
	for _, first := range firsts {
		s, last, bad, err := q.openSegment(first)
		if err != nil {
			return err
		}
		highest = max64(highest, max64(first, last))
		corrupt = corrupt || bad
		if s != nil {
			q.segs = append(q.segs, s)
		}
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
	q.log.Info("outbox opened", "segments", len(q.segs), "depth", q.depth, "bytes", q.bytes, "next_seq", q.nextSeq)
	return nil
}

// openSegment opens one segment and builds its index. A corrupt one is
// salvaged (bad is true); a removed empty one gives a nil segment.
func (q *Outbox) openSegment(first uint64) (s *segment, last uint64, bad bool, err error) {
	path := filepath.Join(q.opts.Dir, segName(first))
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		// Killed while creating it: nothing was ever committed there.
		q.log.Warn("outbox: removing an empty segment file left by a crash", "segment", path)
		if err := os.Remove(path); err != nil {
			return nil, 0, false, fmt.Errorf("outbox %s: remove empty segment: %w", path, err)
		}
		return nil, 0, false, nil
	}
	db, err := openBolt(path, q.segOptions())
	if errors.Is(err, ErrCorrupt) {
		s, last, err := q.salvage(path, first, err)
		return s, last, true, err
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("outbox: %w", err)
	}
	s = &segment{first: first, path: path, db: db}
	if fi, err := os.Stat(path); err == nil {
		s.written = fi.Size() // rotate early rather than late after a restart
	}
	err = db.View(func(tx *bolt.Tx) error {
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
			s.setSize(seq, int64(len(v)+8))
			last = max64(last, seq)
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, 0, false, fmt.Errorf("outbox %s: index: %w", path, err)
	}
	s.writtenMsgs = int64(last - first)
	return s, last, false, nil
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
	return &segment{first: first, path: path, db: db}, nil
}

// salvage handles a corrupt segment file: it reads every record it can find
// in the raw pages (checksums tell good records from garbage), moves the file
// aside, and writes what it found into a fresh file of the same name, which
// takes no more appends. It never fails for the content, only for I/O.
func (q *Outbox) salvage(path string, first uint64, cause error) (*segment, uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("outbox %s: read corrupt segment: %w", path, err)
	}
	recs, lost := salvageRecords(data, first)
	aside, err := moveAside(path, q.opts.Now())
	if err != nil {
		return nil, 0, fmt.Errorf("outbox: corrupt segment: %w (%w)", err, cause)
	}
	q.corruptSegs.Add(1)
	q.salvaged.Add(uint64(len(recs)))
	q.dropCorrupt.Add(uint64(lost))
	q.log.Error("outbox segment is corrupt: kept the readable messages, moved the file aside",
		"segment", path, "moved_to", aside, "salvaged", len(recs), "lost_counted", lost, "error", cause)
	last := first
	if len(recs) == 0 {
		return nil, last, nil
	}
	s, err := q.createSegment(first)
	if err != nil {
		return nil, 0, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketMsgs)
		bk.FillPercent = 1
		for _, r := range recs {
			if err := bk.Put(r.key, r.value); err != nil {
				return err
			}
		}
		last = be.Uint64(recs[len(recs)-1].key)
		var v [8]byte
		be.PutUint64(v[:], last)
		return tx.Bucket(bucketMeta).Put(metaLastKey, v[:])
	})
	if err != nil {
		_ = s.db.Close()
		return nil, 0, fmt.Errorf("outbox %s: write salvaged messages: %w", path, err)
	}
	for _, r := range recs {
		s.setSize(be.Uint64(r.key), int64(len(r.key)+len(r.value)))
	}
	s.sealed = true
	return s, last, nil
}

type rawRecord struct{ key, value []byte }

// salvageRecords scans the raw pages of a bbolt file for leaf elements that
// are outbox records of the segment starting at first (8-byte key in range,
// value with a valid checksum), including inline buckets. It trusts nothing
// in the file: every offset is bounds-checked. It returns the records by
// sequence number, without duplicates (old page versions hold the same
// bytes), and how many record-like elements failed their checksum and were
// not found intact elsewhere. Old page versions can resurrect acknowledged
// records: after a corruption, duplicates are possible, losses are not.
func salvageRecords(data []byte, first uint64) ([]rawRecord, int) {
	pageSize := os.Getpagesize()
	if len(data) >= pageHeaderSize+metaSize && ne.Uint32(data[pageHeaderSize:]) == boltMagic {
		if ps := int(ne.Uint32(data[pageHeaderSize+8:])); ps >= 512 && ps <= 1<<16 && ps&(ps-1) == 0 {
			pageSize = ps
		}
	}
	good := make(map[uint64][]byte)
	badSeqs := make(map[uint64]bool)
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
				if _, ok := good[seq]; !ok {
					good[seq] = slices.Clone(v)
				}
			} else {
				badSeqs[seq] = true
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
	seqs := make([]uint64, 0, len(good))
	for seq := range good {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	recs := make([]rawRecord, len(seqs))
	for i, seq := range seqs {
		k := make([]byte, 8)
		be.PutUint64(k, seq)
		recs[i] = rawRecord{key: k, value: good[seq]}
	}
	lost := 0
	for seq := range badSeqs {
		if _, ok := good[seq]; !ok {
			lost++
		}
	}
	return recs, lost
}
