package store

// The ledger: a small file beside the segments (outbox.ledger) saying, for
// each segment, what the writer last knew of it: first and last sequence
// numbers, the lowest stored one and how many are stored. A segment's own
// meta cannot tell what a damaged copy of it lost, since it is in the damaged
// file; the ledger can. At open it is read only for segments that turn out
// damaged or missing: their losses are counted against it (records it says
// were stored and that the salvage cannot find), and records below its
// lowest stored number, which old page versions bring back after they were
// acknowledged, are not resurrected.
//
// It is written by the writer goroutine when it goes idle after a change, at
// most once a second while busy, before drained segments are deleted, and
// at Close (then fsynced): temp file and rename, without fsync otherwise
// (a page-cache write; after a power cut the ledger may be older, which only
// makes a count less exact, never loses a message). Layout, big endian: "FGOXLDG1", count u32, count × (first, last, lo, live u64),
// crc32c of all before it u32.

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"
)

const (
	ledgerName  = "outbox.ledger"
	ledgerMagic = "FGOXLDG1"
	// ledgerEvery spaces ledger writes while the writer is busy.
	ledgerEvery = time.Second
	// ledgerMaxEntries bounds what a ledger file may claim (and what is
	// allocated when reading one): far more segments than a limit allows.
	ledgerMaxEntries = 1 << 20
)

// ledgerEntry is what the ledger says of one segment.
type ledgerEntry struct {
	first, last uint64
	lo          uint64 // lowest stored sequence number (last+1 when none)
	live        uint64 // stored messages
}

// ledgerSnapshot returns the ledger entries of the open segments. q.mu held.
func (q *Outbox) ledgerSnapshot() []ledgerEntry {
	out := make([]ledgerEntry, 0, len(q.segs))
	for _, s := range q.segs {
		e := ledgerEntry{first: s.first, last: s.first, live: uint64(s.live)}
		if n := len(s.sizes); n > 0 {
			e.last = s.first + uint64(n) - 1
		}
		e.lo = s.first + uint64(s.lo)
		if s.live == 0 {
			e.lo = e.last + 1
		}
		out = append(out, e)
	}
	return out
}

func encodeLedger(es []ledgerEntry) []byte {
	b := make([]byte, 0, len(ledgerMagic)+4+32*len(es)+4)
	b = append(b, ledgerMagic...)
	b = be.AppendUint32(b, uint32(len(es)))
	for _, e := range es {
		b = be.AppendUint64(b, e.first)
		b = be.AppendUint64(b, e.last)
		b = be.AppendUint64(b, e.lo)
		b = be.AppendUint64(b, e.live)
	}
	return be.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeLedger parses a ledger file; any inconsistency is an error (the
// ledger is then ignored).
func decodeLedger(b []byte) (map[uint64]ledgerEntry, error) {
	if len(b) < len(ledgerMagic)+8 || string(b[:len(ledgerMagic)]) != ledgerMagic {
		return nil, errors.New("not a ledger")
	}
	body, sum := b[:len(b)-4], be.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("ledger checksum mismatch")
	}
	n := uint64(be.Uint32(body[len(ledgerMagic):]))
	rest := body[len(ledgerMagic)+4:]
	if n > ledgerMaxEntries || uint64(len(rest)) != 32*n {
		return nil, errors.New("ledger length mismatch")
	}
	out := make(map[uint64]ledgerEntry, n)
	for i := range n {
		p := rest[32*i:]
		e := ledgerEntry{first: be.Uint64(p), last: be.Uint64(p[8:]), lo: be.Uint64(p[16:]), live: be.Uint64(p[24:])}
		if e.last < e.first || e.lo < e.first || e.lo > e.last+1 || e.live > e.last-e.first+1 {
			return nil, fmt.Errorf("ledger entry %d inconsistent", i)
		}
		out[e.first] = e
	}
	return out, nil
}

// readLedger returns the ledger's entries by first sequence number, or nil
// when there is none or it is unreadable (logged).
func (q *Outbox) readLedger() map[uint64]ledgerEntry {
	b, err := os.ReadFile(filepath.Join(q.opts.Dir, ledgerName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil && len(b) > len(ledgerMagic)+8+32*ledgerMaxEntries {
		err = errors.New("ledger too large")
	}
	var es map[uint64]ledgerEntry
	if err == nil {
		es, err = decodeLedger(b)
	}
	if err != nil {
		q.log.Warn("outbox ledger unreadable; losses in damaged segments can only be counted from what is found in them", "error", err)
		return nil
	}
	return es
}

// writeLedger writes the ledger of the open segments, fsyncing it when
// durable is set. Only the writer goroutine (or Close, after it) calls it.
func (q *Outbox) writeLedger(durable bool) {
	q.mu.Lock()
	es := q.ledgerSnapshot()
	q.ledgerDirty = false
	q.mu.Unlock()
	q.ledgerAt = time.Now()
	if err := writeFileAtomic(filepath.Join(q.opts.Dir, ledgerName), encodeLedger(es), durable); err != nil {
		q.logWrite.Do(func() {
			q.log.Error("outbox: writing the ledger failed; losses in a segment damaged later may be undercounted", "error", err)
		})
	}
}

// writeFileAtomic replaces path with data through a temporary file and a
// rename; with durable, the file and the directory are fsynced.
func writeFileAtomic(path string, data []byte, durable bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if durable {
		return syncDir(filepath.Dir(path))
	}
	return nil
}
