package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/board/update"
)

// Updater installs update bundles (board/update.Manager over RAUC).
type Updater interface {
	// Install starts installing the bundle at source (a path or a URL).
	Install(ctx context.Context, source string) error
	// Status is the installation's state and the booted slot.
	Status(ctx context.Context) (update.Status, error)
	// Reboot reboots into the installed update (update.ErrNotInstalled
	// when there is none, update.ErrBusy while installing).
	Reboot(ctx context.Context) error
}

// postReboot is POST /api/v1/update/reboot: boot the installed update.
func (s *Server) postReboot(w http.ResponseWriter, r *http.Request) {
	if s.opts.Updater == nil {
		writeError(w, http.StatusNotImplemented, "updates are not available on this gateway (no RAUC)")
		return
	}
	switch err := s.opts.Updater.Reboot(r.Context()); {
	case errors.Is(err, update.ErrNotInstalled), errors.Is(err, update.ErrBusy):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		s.log.Warn("web: reboot into the installed update", "address", clientAddr(r))
		writeJSON(w, http.StatusAccepted, map[string]any{"rebooting": true})
	}
}

// maxBundle bounds an uploaded update bundle.
const maxBundle = 1 << 30

// uploadTimeout bounds a bundle upload.
const uploadTimeout = 15 * time.Minute

// bundleFile is where an uploaded bundle is kept under the data directory
// while RAUC installs it.
const bundleFile = "update/bundle.raucb"

// updateRequest names a bundle RAUC fetches itself.
type updateRequest struct {
	URL string `json:"url"`
}

// postUpdate is POST /api/v1/update: a JSON {"url"} RAUC streams from, or
// the bundle itself as application/octet-stream (stored on the data
// partition, then installed). The answer is 202; GET /api/v1/update shows
// the progress.
func (s *Server) postUpdate(w http.ResponseWriter, r *http.Request) {
	if s.opts.Updater == nil {
		writeError(w, http.StatusNotImplemented, "updates are not available on this gateway (no RAUC)")
		return
	}
	var source string
	switch ct := r.Header.Get("Content-Type"); {
	case strings.HasPrefix(ct, "application/json"):
		var req updateRequest
		if !readJSON(w, r, &req) {
			return
		}
		if !strings.HasPrefix(req.URL, "https://") && !strings.HasPrefix(req.URL, "http://") {
			writeFields(w, "invalid update", FieldError{Field: "url", Error: "must be an http:// or https:// URL of a .raucb bundle"})
			return
		}
		source = req.URL
	case strings.HasPrefix(ct, "application/octet-stream"):
		// A bundle of a few hundred MB may take longer than read_timeout.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(uploadTimeout))
		path, err := s.saveBundle(w, r)
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("bundle larger than %d bytes", maxBundle))
				return
			}
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		source = path
	default:
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json ({\"url\"}) or application/octet-stream (the bundle)")
		return
	}
	if err := s.opts.Updater.Install(r.Context(), source); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, update.ErrBusy) {
			code = http.StatusConflict
		}
		writeError(w, code, err.Error())
		return
	}
	s.log.Info("web: update started", "address", clientAddr(r), "upload", !strings.Contains(source, "://"))
	writeJSON(w, http.StatusAccepted, map[string]any{"installing": true})
}

// saveBundle streams the request body to the data directory, replacing
// the previous bundle only once the whole body arrived.
func (s *Server) saveBundle(w http.ResponseWriter, r *http.Request) (string, error) {
	path := filepath.Join(s.opts.DataDir, bundleFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("store bundle: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".bundle-*")
	if err != nil {
		return "", fmt.Errorf("store bundle: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, http.MaxBytesReader(w, r.Body, maxBundle))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("store bundle: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", fmt.Errorf("store bundle: %w", err)
	}
	return path, nil
}

// getUpdate is GET /api/v1/update: RAUC's operation, progress and last
// error, the booted slot, and when it was marked good.
func (s *Server) getUpdate(w http.ResponseWriter, r *http.Request) {
	if s.opts.Updater == nil {
		writeJSON(w, http.StatusOK, map[string]any{"available": false})
		return
	}
	st, err := s.opts.Updater.Status(r.Context())
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"available": true, "status": st})
}
