package coap

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// coapClient finds libcoap's coap-client (Debian libcoap3-bin installs it as
// coap-client-{notls,gnutls,openssl} with coap-client as an alternative).
func coapClient(t *testing.T) string {
	for _, name := range []string{"coap-client", "coap-client-notls", "coap-client-gnutls", "coap-client-openssl"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("coap-client (Debian libcoap3-bin) not on PATH")
	return ""
}

func need(t *testing.T, bin string) string {
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s not on PATH (Debian mosquitto-clients)", bin)
	}
	return p
}

func run(t *testing.T, ctx context.Context, bin string, args ...string) []byte {
	t.Helper()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}

func TestCoapClientInterop(t *testing.T) {
	client := coapClient(t)
	pub, sub := need(t, "mosquitto_pub"), need(t, "mosquitto_sub")
	e := startEnv(t, nil, nil)
	ctx := ctxT(t)
	base := "coap://" + e.addr + "/ps/"
	_, port, _ := net.SplitHostPort(e.b.Addr("tcp"))

	t.Run("publish", func(t *testing.T) {
		msgs := e.capture("ci/pub")
		run(t, ctx, client, "-m", "post", "-e", "21.5", base+"ci/pub?qos=1")
		if m := recv(t, msgs); string(m.Payload) != "21.5" || m.QoS != 1 {
			t.Fatalf("got %q qos %d", m.Payload, m.QoS)
		}
	})
	t.Run("block-wise upload", func(t *testing.T) {
		msgs := e.capture("ci/big")
		big := numbered(3200)
		file := filepath.Join(t.TempDir(), "big")
		if err := os.WriteFile(file, big, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, ctx, client, "-m", "put", "-b", "64", "-f", file, base+"ci/big")
		if m := recv(t, msgs); !bytes.Equal(m.Payload, big) {
			t.Fatalf("got %d bytes", len(m.Payload))
		}
	})
	t.Run("observe and MQTT subscriber", func(t *testing.T) {
		obsCtx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		var coapOut, mqttOut bytes.Buffer
		obs := exec.CommandContext(obsCtx, client, "-s", "4", "-B", "4", base+"ci/obs")
		obs.Stdout = &coapOut
		ms := exec.CommandContext(obsCtx, sub, "-h", "127.0.0.1", "-p", port, "-t", "ci/obs", "-C", "1", "-W", "6")
		ms.Stdout = &mqttOut
		if err := obs.Start(); err != nil {
			t.Fatal(err)
		}
		if err := ms.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "coap-client observing", func() bool { return e.g.Stats().Observers == 1 })
		eventually(t, "mosquitto_sub subscribed", func() bool { return e.b.Info().Subscriptions >= 2 })
		run(t, ctx, pub, "-h", "127.0.0.1", "-p", port, "-t", "ci/obs", "-m", "from-mqtt", "-q", "1")
		if err := ms.Wait(); err != nil {
			t.Fatalf("mosquitto_sub: %v", err)
		}
		_ = obs.Wait()
		if !strings.Contains(coapOut.String(), "from-mqtt") || !strings.Contains(mqttOut.String(), "from-mqtt") {
			t.Fatalf("coap-client got %q, mosquitto_sub got %q", coapOut.String(), mqttOut.String())
		}
	})
}
