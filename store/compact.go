package store

// Compaction. bbolt never shrinks its file: after a burst (offline session
// queues of hundreds of MB, then cleared) broker.db kept its size for good
// (391 MB with almost nothing in it). Only rewriting the live data into a
// new file gives the space back: bolt.Compact into <path>.compact, fsync,
// atomic rename over the file, fsync of the directory, reopen.
//
// When: at Open, before anything reads the file, and then by the writer
// when it is idle, checked every CompactInterval, in both cases only when the
// file is larger than CompactMinBytes and the live pages are less than half
// of it. The live data is measured by walking the buckets' pages (bbolt's own
// free-page counters are only filled by a write transaction), and a file
// whose live data exceeds CompactMaxLiveBytes is left alone: copying it
// would stall the writer (and the broker's hot path behind it) for seconds
// on flash, and wastes at most as much space as it holds. A compaction that
// fails before the rename leaves the old file as it was.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Compaction defaults applied by Open to zero fields of Options.
const (
	DefaultCompactMinBytes     = 8 << 20
	DefaultCompactMaxLiveBytes = 64 << 20
	DefaultCompactInterval     = 10 * time.Minute
	// compactTxBytes bounds the dirty pages a compaction transaction holds
	// in memory.
	compactTxBytes = 4 << 20
)

// compactSuffix names the temporary file of a compaction.
const compactSuffix = ".compact"

// fileUsage is how much of a bbolt file is in use.
type fileUsage struct {
	file int64 // the file's size
	live int64 // bytes of the pages reachable from the root, and the meta pages
}

// measure walks the file's buckets and counts their pages.
func measure(bdb *bolt.DB, path string) (fileUsage, error) {
	var u fileUsage
	fi, err := os.Stat(path)
	if err != nil {
		return u, err
	}
	u.file = fi.Size()
	ps := int64(bdb.Info().PageSize)
	err = bdb.View(func(tx *bolt.Tx) error {
		pages := int64(3) // two meta pages and the root bucket's page
		err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			st := b.Stats()
			pages += int64(st.BranchPageN + st.BranchOverflowN + st.LeafPageN + st.LeafOverflowN)
			return nil
		})
		u.live = pages * ps
		return err
	})
	return u, err
}

// worthCompacting applies the thresholds of o to u.
func worthCompacting(u fileUsage, o Options) bool {
	return o.CompactMinBytes >= 0 && u.file >= o.CompactMinBytes &&
		u.live <= o.CompactMaxLiveBytes && 2*u.live < u.file
}

// compactFile rewrites the open bdb at path into a compact copy and renames
// it over path. bdb is closed in every case; the returned handle is the file
// now at path (the new one, or the old one reopened when the compaction
// failed before the rename), or nil with an error when it cannot be opened.
func compactFile(bdb *bolt.DB, path string, o Options) (*bolt.DB, error) {
	tmp := path + compactSuffix
	_ = os.Remove(tmp)
	err := func() error {
		dst, err := bolt.Open(tmp, o.FileMode, &bolt.Options{
			Timeout:        o.OpenTimeout,
			NoSync:         true, // one fsync at the end
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
		})
		if err != nil {
			return err
		}
		err = bolt.Compact(dst, bdb, compactTxBytes)
		if err == nil {
			err = dst.Sync()
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		return err
	}()
	if cerr := bdb.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		reopened, rerr := openBolt(path, o)
		return reopened, errors.Join(fmt.Errorf("store %s: compact: %w", path, err), rerr)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		o.Logger.Warn("store: sync directory after compaction", "path", path, "error", err)
	}
	return openBolt(path, o)
}

// compactAtOpen compacts a freshly opened file when it is worth it.
func compactAtOpen(bdb *bolt.DB, path string, o Options) (*bolt.DB, error) {
	if o.CompactMinBytes < 0 {
		return bdb, nil
	}
	u, err := measure(bdb, path)
	if err != nil || !worthCompacting(u, o) {
		return bdb, nil // a file that cannot be measured is used as it is
	}
	start := time.Now()
	nb, err := compactFile(bdb, path, o)
	if err != nil {
		return nb, err
	}
	after := u.file
	if fi, err := os.Stat(path); err == nil {
		after = fi.Size()
	}
	o.Logger.Info("store compacted", "path", path, "bytes_before", u.file, "bytes_after", after,
		"live_bytes", u.live, "took", time.Since(start).Round(time.Millisecond))
	return nb, nil
}

// Compact rewrites the file without its free pages now, whatever the
// thresholds, and returns once the new file is in place. Writes wait
// meanwhile. It fails when the DB is closed or ctx ends first (the
// compaction still happens then).
func (d *DB) Compact(ctx context.Context) error {
	req := make(chan error, 1)
	select {
	case d.compactReq <- req:
	case <-d.done:
		return fmt.Errorf("store %s: compact: %w", d.path, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("store %s: compact: %w", d.path, ctx.Err())
	}
	select {
	case err := <-req:
		return err
	case <-ctx.Done():
		return fmt.Errorf("store %s: compact: %w", d.path, ctx.Err())
	}
}

// compact runs in the writer goroutine: it takes the file from the readers
// (waiting for those inside a transaction), rewrites it and reopens it. With
// force unset it only acts when worthCompacting, and gives up rather than
// wait when a reader holds the file.
func (d *DB) compact(force bool) error {
	if !force && d.opts.CompactMinBytes < 0 {
		return nil
	}
	u, err := measure(d.bolt, d.path)
	if err != nil {
		return fmt.Errorf("store %s: measure: %w", d.path, err)
	}
	if !force && !worthCompacting(u, d.opts) {
		return nil
	}
	if force {
		d.boltMu.Lock()
	} else if !d.boltMu.TryLock() {
		return nil // a long read (ForEach at start): next time
	}
	defer d.boltMu.Unlock()
	start := time.Now()
	nb, err := compactFile(d.bolt, d.path, d.opts)
	d.bolt = nb
	if nb == nil {
		d.broken = fmt.Errorf("store %s: unusable after a failed compaction: %w", d.path, err)
		d.log.Error("store file could not be reopened after compaction; writes fail from now on", "error", err)
		return d.broken
	}
	if err != nil {
		d.log.Error("store compaction failed; the file is unchanged", "error", err)
		return err
	}
	after := u.file
	if fi, err := os.Stat(d.path); err == nil {
		after = fi.Size()
	}
	d.stats.compactions.Add(1)
	d.log.Info("store compacted", "bytes_before", u.file, "bytes_after", after,
		"live_bytes", u.live, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
