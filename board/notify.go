package board

import (
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends one sd_notify datagram to $NOTIFY_SOCKET (nothing when the
// variable is unset, i.e. not started by systemd with Type=notify). A
// failure is logged, rate-limited, and not returned: the gateway keeps
// running whether or not the service manager hears it.
func (b *Board) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		b.logNotify.Do(func() {
			b.log.Warn("sd_notify failed", "state", firstLine(state), "error", err)
		})
	}
}

// Ready tells systemd that startup is finished (READY=1): call it once every
// listener is bound.
func (b *Board) Ready() { b.notify(daemon.SdNotifyReady) }

// Reloading tells systemd that a configuration reload has begun
// (RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload expects). Call
// Reloaded when the reload is done, whether it succeeded or not.
func (b *Board) Reloading() {
	b.notify(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
}

// Reloaded tells systemd that the reload is over (READY=1).
func (b *Board) Reloaded() { b.notify(daemon.SdNotifyReady) }

// Stopping tells systemd that shutdown has begun (STOPPING=1).
func (b *Board) Stopping() { b.notify(daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status fieldgate` shows
// (STATUS=...). Line breaks are replaced by spaces.
func (b *Board) Status(line string) {
	b.notify("STATUS=" + strings.Join(strings.Fields(line), " "))
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
