SUMMARY = "fieldgate edge gateway: MQTT broker, MQTT-SN/CoAP gateways, Modbus/serial pollers, durable cloud uplink"
HOMEPAGE = "https://github.com/fieldgate/fieldgate"
# fieldgate is Apache-2.0; the patched MQTT engine in third_party/ is MIT
# (see NOTICE). The licences of the Go modules linked in are appended by
# fieldgate-licenses.inc.
LICENSE = "Apache-2.0 & MIT"
# (The engine's LICENSE.md is listed in fieldgate-licenses.inc.)
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=86d3f3a95c324c9479bd8986968f4327"

GO_IMPORT = "github.com/fieldgate/fieldgate"
GO_INSTALL = "${GO_IMPORT}/cmd/fieldgate"

# A release: the tag v${PV} at the commit SRCREV (fieldgate-release.inc,
# written by yocto/release.sh). The fetch fails if the tag is not that
# commit. yocto/kas/dev.yml builds the local checkout instead.
require ${BPN}-release.inc
FIELDGATE_SRC_URI ?= "git://github.com/fieldgate/fieldgate.git;protocol=https;branch=main;tag=v${PV};destsuffix=${GO_SRCURI_DESTSUFFIX}"
SRC_URI = "${FIELDGATE_SRC_URI}"

# Every Go module as a gomod:// SRC_URI entry with its sha256, so do_fetch
# works from a download mirror and do_compile needs no network.
# `bitbake -c update_modules fieldgate` (or yocto/update-modules.sh
# offline) regenerates the two .inc files after a go.mod change.
require ${BPN}-go-mods.inc
require ${BPN}-licenses.inc

inherit go-mod go-mod-update-modules systemd useradd

# One static binary, as `make cross` builds it. Not stripped here: the
# package step strips it and keeps the symbols in fieldgate-dbg
# (a pre-stripped binary fails the already-stripped QA check).
CGO_ENABLED = "0"
GO_LINKSHARED = ""
GO_EXTRA_LDFLAGS = "-X main.version=${PV} -X main.commit=${SRCREV} -X main.date=${@time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(int(d.getVar('SOURCE_DATE_EPOCH'))))}"

# go.bbclass builds PIE. On 32-bit ARM Go links PIE only with the external
# linker, which CGO_ENABLED=0 rules out ("-buildmode=pie requires external
# (cgo) linking"): armv7 builds a static non-PIE binary instead, as
# `make cross` does. 64-bit ARM keeps PIE (Go's internal linker does it).
GOBUILDFLAGS:remove:arm = "-buildmode=pie"
INSANE_SKIP:${PN}:append:arm = " textrel"

# The fieldgate user in dialout (serial ports); systemd-sysusers would also
# create it from the sysusers.d file, useradd does it at rootfs time so that
# a read-only root file system has it already.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/fieldgate --no-create-home --shell /sbin/nologin --user-group --groups dialout fieldgate"

SYSTEMD_SERVICE:${PN} = "fieldgate.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# The board's status LEDs (board.leds in the factory config), per machine;
# "" leaves a role without an LED. The Raspberry Pi 4 has two: the green
# ACT LED blinks the heartbeat, the red PWR LED shows a fault.
FIELDGATE_LED_HEARTBEAT ?= ""
FIELDGATE_LED_UPLINK ?= ""
FIELDGATE_LED_FAULT ?= ""
FIELDGATE_LED_HEARTBEAT:raspberrypi4 ?= "ACT"
FIELDGATE_LED_FAULT:raspberrypi4 ?= "PWR"

FIELDGATE_SRC = "${S}/src/${GO_IMPORT}"

do_install:append() {
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/fieldgate.service ${D}${systemd_system_unitdir}/fieldgate.service
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/sysusers.d/fieldgate.conf ${D}${nonarch_libdir}/sysusers.d/fieldgate.conf
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/tmpfiles.d/fieldgate.conf ${D}${nonarch_libdir}/tmpfiles.d/fieldgate.conf
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/sysctl.d/60-fieldgate-quic.conf ${D}${nonarch_libdir}/sysctl.d/60-fieldgate-quic.conf
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/fieldgate.yaml ${D}${sysconfdir}/fieldgate/fieldgate.yaml
    # The machine's LEDs into the factory config's board.leds section.
    sed -i -e 's|^\(    heartbeat:\).*|\1 "${FIELDGATE_LED_HEARTBEAT}"|' \
           -e 's|^\(    uplink:\).*|\1 "${FIELDGATE_LED_UPLINK}"|' \
           -e 's|^\(    fault:\).*|\1 "${FIELDGATE_LED_FAULT}"|' \
        ${D}${sysconfdir}/fieldgate/fieldgate.yaml
    # State lives on the data partition (/data/fieldgate bound here, see
    # fieldgate-os); the directory exists in the image as the mount point.
    install -d -m 0750 -o fieldgate -g fieldgate ${D}${localstatedir}/lib/fieldgate
    # go-mod installs the Go sources for -dev; the appliance does not need them.
    rm -rf ${D}${libdir}/go
}

# The factory config: a package upgrade keeps local changes. The gateway
# saves the technician's config on the data partition, not here.
CONFFILES:${PN} = "${sysconfdir}/fieldgate/fieldgate.yaml"

FILES:${PN} += " \
    ${systemd_system_unitdir}/fieldgate.service \
    ${nonarch_libdir}/sysusers.d/fieldgate.conf \
    ${nonarch_libdir}/tmpfiles.d/fieldgate.conf \
    ${nonarch_libdir}/sysctl.d/60-fieldgate-quic.conf \
    ${sysconfdir}/fieldgate \
    ${localstatedir}/lib/fieldgate \
"
