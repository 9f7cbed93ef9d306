package web

import (
	"github.com/fieldgate/fieldgate/internal/atomicfile"

	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// authFile is the name of the auth state file in the data dir.
const authFile = "web-auth.json"

// tokenPrefix starts every bearer token, so that a leaked one is easy to
// recognise in a log or a repository.
const tokenPrefix = "fgt_"

// minPasswordLen is the shortest admin password accepted.
const minPasswordLen = 8

// Scopes of bearer tokens, from least to most. A session (the admin's
// browser) has every right.
const (
	// scopeMetrics allows GET /metrics only: for Prometheus.
	scopeMetrics = "metrics"
	// scopeRead allows /metrics and every GET of the API except the token
	// list: for dashboards and monitoring scripts.
	scopeRead = "read"
	// scopeAdmin allows everything, as the admin login does.
	scopeAdmin = "admin"
)

// scopes are the token scopes in rising order of rights.
var scopes = []string{scopeMetrics, scopeRead, scopeAdmin}

// scopeAllows reports whether a caller with scope have may do what needs
// scope need.
func scopeAllows(have, need string) bool {
	return slices.Index(scopes, have) >= slices.Index(scopes, need) && slices.Contains(scopes, have)
}

// authState is what web-auth.json holds. Only hashes are stored: bcrypt for
// the admin password, SHA-256 for bearer tokens (they are 256 random bits,
// so a fast hash is enough).
type authState struct {
	Version   int         `json:"version"`
	AdminHash string      `json:"admin_hash,omitempty"`
	Tokens    []tokenInfo `json:"tokens,omitempty"`
}

// tokenInfo describes one bearer token; the token itself is shown once,
// when created, and never stored.
type tokenInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Scope is metrics, read or admin. Tokens made before scopes existed
	// have none in the file and are admin, as they always were.
	Scope    string    `json:"scope"`
	Hash     string    `json:"hash,omitempty"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// authStore guards the auth state and its file.
type authStore struct {
	path string
	cost int

	// checks counts bcrypt comparisons of the admin password.
	checks atomic.Int64
	// unscoped counts the tokens loaded without a scope (made admin).
	unscoped int

	mu    sync.Mutex
	state authState
}

// openAuthStore loads dataDir/web-auth.json, or starts empty (first boot)
// when it does not exist.
func openAuthStore(dataDir string, cost int) (*authStore, error) {
	s := &authStore{path: filepath.Join(dataDir, authFile), cost: cost, state: authState{Version: 1}}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("web: read auth state: %w", err)
	}
	if err := json.Unmarshal(data, &s.state); err != nil {
		return nil, fmt.Errorf("web: auth state %s: %w", s.path, err)
	}
	if s.state.Version != 1 {
		return nil, fmt.Errorf("web: auth state %s: unknown version %d", s.path, s.state.Version)
	}
	for i := range s.state.Tokens {
		t := &s.state.Tokens[i]
		switch {
		case t.Scope == "":
			// Made before scopes: they were full admin and stay so (the
			// page shows it); the file gets the scope at its next write.
			t.Scope = scopeAdmin
			s.unscoped++
		case !slices.Contains(scopes, t.Scope):
			return nil, fmt.Errorf("web: auth state %s: token %s: unknown scope %q", s.path, t.ID, t.Scope)
		}
	}
	return s, nil
}

// hasPassword reports whether the admin password is set (false: first boot).
func (s *authStore) hasPassword() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.AdminHash != ""
}

// setPassword sets the admin password. With onlyIfUnset it fails when one
// is already set (first boot setup races).
func (s *authStore) setPassword(password string, onlyIfUnset bool) error {
	if len(password) < minPasswordLen {
		return fmt.Errorf("must be at least %d characters", minPasswordLen)
	}
	if len(password) > 72 {
		return errors.New("must be at most 72 bytes")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if onlyIfUnset && s.state.AdminHash != "" {
		return errAlreadySetUp
	}
	next := s.state
	next.AdminHash = string(hash)
	return s.commit(next)
}

var errAlreadySetUp = errors.New("the admin password is already set")

// checkPassword reports whether password is the admin password.
func (s *authStore) checkPassword(password string) bool {
	s.mu.Lock()
	hash := s.state.AdminHash
	s.mu.Unlock()
	if hash == "" {
		return false
	}
	s.checks.Add(1)
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// newToken creates a bearer token named name with scope and returns it
// (the only time it is ever seen) with its info.
func (s *authStore) newToken(name, scope string, now time.Time) (string, tokenInfo, error) {
	if !slices.Contains(scopes, scope) {
		return "", tokenInfo{}, fmt.Errorf("unknown scope %q", scope)
	}
	secret := randomString(32)
	info := tokenInfo{ID: randomString(6), Name: name, Scope: scope, Hash: hashToken(tokenPrefix + secret), Created: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.state.Tokens) >= 100 {
		return "", tokenInfo{}, errors.New("at most 100 tokens; delete one first")
	}
	next := s.state
	next.Tokens = append(append([]tokenInfo(nil), s.state.Tokens...), info)
	if err := s.commit(next); err != nil {
		return "", tokenInfo{}, err
	}
	info.Hash = ""
	return tokenPrefix + secret, info, nil
}

// checkToken returns the scope of token when it is a known bearer token,
// and notes its use.
func (s *authStore) checkToken(token string, now time.Time) (scope string, ok bool) {
	h := hashToken(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.state.Tokens {
		if subtle.ConstantTimeCompare([]byte(s.state.Tokens[i].Hash), []byte(h)) == 1 {
			s.state.Tokens[i].LastUsed = now // in memory only: not worth a disk write per request
			return s.state.Tokens[i].Scope, true
		}
	}
	return "", false
}

// tokens lists the tokens without their hashes.
func (s *authStore) tokens() []tokenInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]tokenInfo, len(s.state.Tokens))
	for i, t := range s.state.Tokens {
		t.Hash = ""
		out[i] = t
	}
	return out
}

// deleteToken removes a token by id.
func (s *authStore) deleteToken(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.state
	next.Tokens = nil
	found := false
	for _, t := range s.state.Tokens {
		if t.ID == id {
			found = true
			continue
		}
		next.Tokens = append(next.Tokens, t)
	}
	if !found {
		return false, nil
	}
	return true, s.commit(next)
}

// commit writes next to the file atomically and then makes it the state.
// s.mu must be held.
func (s *authStore) commit(next authState) error {
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return fmt.Errorf("web: encode auth state: %w", err)
	}
	if err := atomicfile.Write(s.path, data, 0o600); err != nil {
		return fmt.Errorf("web: write auth state: %w", err)
	}
	s.state = next
	return nil
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// randomString returns n random bytes, base64url encoded.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics on broken systems)
	return base64.RawURLEncoding.EncodeToString(b)
}
