# fieldgate build. `make help` lists the targets.

GO       ?= go
# Evaluated once; each can be overridden from the environment or command line.
VERSION  := $(or $(VERSION),$(shell git describe --tags --always --dirty 2>/dev/null),dev)
COMMIT   := $(or $(COMMIT),$(shell git rev-parse --short HEAD 2>/dev/null),unknown)
DATE     := $(or $(DATE),$(shell date -u +%Y-%m-%dT%H:%M:%SZ))
FUZZTIME ?= 30s

LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
BUILD    := CGO_ENABLED=0 $(GO) build -trimpath

.DEFAULT_GOAL := help
STATICCHECK ?= $(or $(shell command -v staticcheck 2>/dev/null),$(shell $(GO) env GOPATH)/bin/staticcheck)

.PHONY: help build run deps test bench bench-qemu cross dist lint fuzz clean check-units check-yocto check-yocto-bitbake engine-patches engine-patch

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/fieldgate for this machine, version-stamped
	$(BUILD) -ldflags '$(LDFLAGS)' -o bin/fieldgate ./cmd/fieldgate

run: build ## build, then run the gateway on its built-in defaults (data in ./data; prints the first-boot setup code)
	./bin/fieldgate run

deps: ## install the tests' peers (Debian packages, npm, staticcheck) as root, else print the command; SKIP_PEERS=1 goes on without them
	.ci/deps

# make test runs the ARM binaries of `make dist` under qemu (cmd/fieldgate/arm_test.go).
# Its last line says how many tests ran, passed, failed and were skipped.
test: export FIELDGATE_DIST := $(CURDIR)/dist
test: deps dist check-units check-yocto lint engine-patches ## peers (make deps), units, Yocto layer, ARM dist, lint, engine patch series, and every test with -race (integration tests included)
	$(GO) run ./cmd/testsummary -race -count=1 -timeout 30m ./...
	@# the patched MQTT engine is a module of its own (third_party/); its
	@# upstream tests have data races of their own, so they run without -race
	cd third_party/mochi-mqtt-server && $(GO) vet ./... && $(GO) test -count=1 ./...
	@# the OPC UA codec with fieldgate's decoder bounds (upstream's other
	@# packages' tests need its Python and server fixtures, left out of the copy)
	cd third_party/gopcua-opcua && $(GO) test -count=1 ./ua/

bench: build ## run every benchmark and print their tables (broker vs mosquitto, uplink, Modbus, MQTT-SN, CoAP, rules, setup page, OPC UA)
	$(GO) run ./cmd/mqttbench -fieldgate $(CURDIR)/bin/fieldgate -json bin/bench.json
	$(GO) run ./cmd/uplinkbench
	$(GO) run ./cmd/modbusbench
	$(GO) run ./cmd/snbench
	$(GO) run ./cmd/coapbench
	$(GO) run ./cmd/rulesbench
	$(GO) run ./cmd/webbench -fieldgate $(CURDIR)/bin/fieldgate
	$(GO) run ./cmd/opcuabench -fieldgate $(CURDIR)/bin/fieldgate

# ADRs 0002 and 0003: cost and benefit of raw socket I/O and adaptive cores on
# arm64, emulated by qemu-user (relative numbers only).
ROUNDS ?= 5
bench-qemu: ## broker benchmark of the arm64 build under qemu-aarch64-static, broker.listeners.raw_io and board.cpus each on and off (ROUNDS=5)
	internal/rawio/armbench.sh $(ROUNDS) 5s latency-qos0,latency-qos1,fanin-qos0

# ADR 0001: third_party/mochi-mqtt-server is pristine upstream + patches/.
engine-patches: ## check that pristine upstream (module proxy) + patches/ reproduces each patched copy in third_party/ exactly (mochi-mqtt, gopcua)
	third_party/mochi-mqtt-server/patches/apply.sh check
	third_party/gopcua-opcua/patches/apply.sh check

engine-patch: ## record a patched copy's changes beyond its series as the next patch: make engine-patch NAME=short-name [TREE=gopcua-opcua]
	@test -n "$(NAME)" || { echo "usage: make engine-patch NAME=short-name [TREE=mochi-mqtt-server|gopcua-opcua]"; exit 1; }
	third_party/$(or $(TREE),mochi-mqtt-server)/patches/apply.sh new $(NAME)

cross: ## build static, stripped linux/armv7 (GOARM=7) and linux/arm64 binaries into dist/, version-stamped
	@mkdir -p dist
	GOOS=linux GOARCH=arm GOARM=7 $(BUILD) -ldflags '-s -w $(LDFLAGS)' -o dist/fieldgate-linux-armv7 ./cmd/fieldgate
	GOOS=linux GOARCH=arm64 $(BUILD) -ldflags '-s -w $(LDFLAGS)' -o dist/fieldgate-linux-arm64 ./cmd/fieldgate

dist: cross ## cross, then pack each binary with the unit files and the factory config (+ SHA256SUMS)
	@set -e; for arch in armv7 arm64; do \
		name=fieldgate-$(VERSION)-linux-$$arch; root=dist/$$name; rm -rf $$root; \
		install -D -m 0755 dist/fieldgate-linux-$$arch        $$root/usr/bin/fieldgate; \
		install -D -m 0644 systemd/fieldgate.service           $$root/usr/lib/systemd/system/fieldgate.service; \
		install -D -m 0644 systemd/sysusers.d/fieldgate.conf   $$root/usr/lib/sysusers.d/fieldgate.conf; \
		install -D -m 0644 systemd/tmpfiles.d/fieldgate.conf   $$root/usr/lib/tmpfiles.d/fieldgate.conf; \
		install -D -m 0644 systemd/sysctl.d/60-fieldgate-quic.conf $$root/usr/lib/sysctl.d/60-fieldgate-quic.conf; \
		install -D -m 0644 systemd/fieldgate.yaml              $$root/etc/fieldgate/fieldgate.yaml; \
		tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='$(DATE)' \
			-C $$root -cf - . | gzip -9n > dist/$$name.tar.gz; \
		rm -rf $$root; echo "dist/$$name.tar.gz"; \
	done
	cd dist && sha256sum fieldgate-linux-armv7 fieldgate-linux-arm64 fieldgate-$(VERSION)-linux-*.tar.gz > SHA256SUMS && sha256sum -c --quiet SHA256SUMS

check-yocto: ## check the Yocto layer offline (variables, paths, release pin, licences, wks, kas) and build+verify a RAUC bundle
	$(GO) test -count=1 ./yocto/

# The real BitBake 2.18 + oe-core wrynose parse of the layer (../shared/yocto-check,
# whose README says how to restore the layer sources it needs; YOCTO_CHECK_SRC
# says where they are). Not part of `make test`: CI has no sources.
YOCTO_CHECK ?= $(CURDIR)/../shared/yocto-check
YOCTO_CHECK_MACHINES ?= qemuarm64 raspberrypi4-64
check-yocto-bitbake: ## parse the layer and resolve fieldgate-image/-bundle with real BitBake (yocto-check; needs its sources), per machine
	@test -x "$(YOCTO_CHECK)/check.sh" || { echo "check-yocto-bitbake: no $(YOCTO_CHECK)/check.sh: set YOCTO_CHECK=<yocto-check dir>"; exit 1; }
	@set -e; for m in $(YOCTO_CHECK_MACHINES); do echo "== check-yocto-bitbake: $$m"; \
		"$(YOCTO_CHECK)/check.sh" "$(CURDIR)/yocto/meta-fieldgate" --machine $$m \
			fieldgate fieldgate-os fieldgate-image fieldgate-bundle; done

lint: ## go vet, gofmt check, staticcheck (installed by make deps)
	$(GO) vet ./...
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	@test -x "$(STATICCHECK)" || { echo "staticcheck missing: run make deps"; exit 1; }
	$(STATICCHECK) ./...

fuzz: ## run every Fuzz target for FUZZTIME each (default 30s)
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 20x $$pkg; \
		done; \
	done

check-units: build ## systemd-analyze verify + security (exposure <= 2.5), sysusers/tmpfiles/sysctl and factory config checks
	@if command -v systemd-analyze >/dev/null 2>&1; then systemd/check-units.sh bin/fieldgate; \
	elif [ "$(SKIP_PEERS)" = 1 ]; then echo "check-units: systemd-analyze missing, unit checks skipped (SKIP_PEERS=1)"; \
	else echo "check-units: systemd-analyze missing: apt-get install systemd, or make deps"; exit 1; fi
	./bin/fieldgate config check systemd/fieldgate.yaml

clean: ## remove bin/ and dist/ (never ./data)
	rm -rf bin dist
