// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: Derek Duncan

package listeners

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const TypeHealthCheck = "healthcheck"

// HTTPHealthCheck is a listener for providing an HTTP healthcheck endpoint.
type HTTPHealthCheck struct {
	sync.RWMutex
	id      string       // the internal id of the listener
	address string       // the network address to bind to
	config  Config       // configuration values for the listener
	listen  *http.Server // the http server
	ln      net.Listener // bound by Init; fieldgate patch (port 0 in tests)
	end     uint32       // ensure the close methods are only called once
}

// NewHTTPHealthCheck initializes and returns a new HTTP listener, listening on an address.
func NewHTTPHealthCheck(config Config) *HTTPHealthCheck {
	return &HTTPHealthCheck{
		id:      config.ID,
		address: config.Address,
		config:  config,
	}
}

// ID returns the id of the listener.
func (l *HTTPHealthCheck) ID() string {
	return l.id
}

// Address returns the address of the listener.
func (l *HTTPHealthCheck) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String() // the bound address: port 0 is resolved
	}
	return l.address
}

// Protocol returns the address of the listener.
func (l *HTTPHealthCheck) Protocol() string {
	if l.listen != nil && l.listen.TLSConfig != nil {
		return "https"
	}

	return "http"
}

// Init initializes the listener.
func (l *HTTPHealthCheck) Init(_ *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthcheck", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	l.listen = &http.Server{
		ReadTimeout:  5 * time.Second,
		WriteTimeout: 5 * time.Second,
		Addr:         l.address,
		Handler:      mux,
	}

	if l.config.TLSConfig != nil {
		l.listen.TLSConfig = l.config.TLSConfig
	}

	// fieldgate patch (port 0 in tests): bind here, like the TCP listener,
	// so that Address reports the bound address and Serve cannot race a
	// client that connects right after Init.
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln

	return nil
}

// Serve starts listening for new connections and serving responses.
func (l *HTTPHealthCheck) Serve(establish EstablishFn) {
	if l.listen.TLSConfig != nil {
		_ = l.listen.ServeTLS(l.ln, "", "")
	} else {
		_ = l.listen.Serve(l.ln)
	}
}

// Close closes the listener and any client connections.
func (l *HTTPHealthCheck) Close(closeClients CloseFn) {
	l.Lock()
	defer l.Unlock()

	if atomic.CompareAndSwapUint32(&l.end, 0, 1) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.listen.Shutdown(ctx)
		if l.ln != nil {
			_ = l.ln.Close() // when Serve never ran
		}
	}

	closeClients(l.id)
}
