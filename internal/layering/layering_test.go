package layering

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/fieldgate/fieldgate/"

// leaves are the parts the composition root wires together.
var leaves = []string{"protocols/mqtt", "protocols/mqttsn", "protocols/coap", "southbound/modbus", "southbound/serial", "uplink", "rules", "store", "board"}

// exceptions are the leaf-to-leaf imports written down in doc.go.
var exceptions = map[string][]string{
	"protocols/mqttsn": {"protocols/mqtt"},
	"protocols/coap":   {"protocols/mqtt"},
}

// graph returns every package of the module (path relative to the module)
// with its direct imports.
func graph(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		g[strings.TrimPrefix(f[0], module)] = f[1:]
	}
	return g
}

// leafOf returns the leaf pkg belongs to ("" when none).
func leafOf(pkg string) string {
	for _, l := range leaves {
		if pkg == l || strings.HasPrefix(pkg, l+"/") {
			return l
		}
	}
	return ""
}

func under(pkg, root string) bool { return pkg == root || strings.HasPrefix(pkg, root+"/") }

func TestLayering(t *testing.T) {
	g := graph(t)
	if len(g) < 10 {
		t.Fatalf("go list found %d packages: not the module?", len(g))
	}
	for pkg, imports := range g {
		from := leafOf(pkg)
		core := under(pkg, "bus") || under(pkg, "internal")
		for _, imp := range imports {
			if !strings.HasPrefix(imp, module) {
				if from == "store" && (imp == "net" || imp == "net/http" || imp == "crypto/tls") {
					t.Errorf("%s imports %s: store imports no network code", pkg, imp)
				}
				continue
			}
			to := strings.TrimPrefix(imp, module)
			switch {
			case from != "" && (under(to, "gateway") || under(to, "cmd")):
				t.Errorf("%s imports %s: a leaf never imports the composition root or cmd", pkg, to)
			case from != "" && leafOf(to) != "" && leafOf(to) != from && !allowed(from, leafOf(to)):
				t.Errorf("%s imports %s: leaves do not import each other (exceptions in doc.go)", pkg, to)
			case core && (leafOf(to) != "" || under(to, "gateway") || under(to, "cmd")):
				t.Errorf("%s imports %s: bus and internal/* import no part of the gateway", pkg, to)
			}
		}
	}
}

func allowed(from, to string) bool {
	for _, e := range exceptions[from] {
		if e == to {
			return true
		}
	}
	return false
}
