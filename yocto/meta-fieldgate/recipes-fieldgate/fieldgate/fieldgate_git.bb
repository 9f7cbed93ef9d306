SUMMARY = "fieldgate edge gateway: MQTT broker, MQTT-SN/CoAP gateways, Modbus/serial pollers, durable cloud uplink"
HOMEPAGE = "https://github.com/fieldgate/fieldgate"
# The repository has no LICENSE file yet: until it has, the recipe says
# CLOSED. Then set LICENSE and LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=...".
# The licenses of the Go modules (and of the patched MQTT engine in
# third_party/) are appended by fieldgate-licenses.inc.
LICENSE = "CLOSED"

GO_IMPORT = "github.com/fieldgate/fieldgate"
GO_INSTALL = "${GO_IMPORT}/cmd/fieldgate"
SRC_URI = "git://github.com/fieldgate/fieldgate.git;protocol=https;branch=main;destsuffix=${GO_SRCURI_DESTSUFFIX}"
# Set to the release commit; `bitbake -c update_modules fieldgate` (or
# yocto/update-modules.sh offline) regenerates the two .inc files after a
# go.mod change.
SRCREV = "${AUTOREV}"
PV = "0.1+git"

# Every Go module as a gomod:// SRC_URI entry with its sha256, so do_fetch
# works from a download mirror and do_compile needs no network.
require ${BPN}-go-mods.inc
require ${BPN}-licenses.inc

inherit go-mod go-mod-update-modules systemd useradd

# One static binary, as `make cross` builds it.
CGO_ENABLED = "0"
GO_LINKSHARED = ""
GOBUILDFLAGS:append = " -trimpath"
GO_EXTRA_LDFLAGS = "-s -w -X main.version=${PV} -X main.commit=${SRCREV} -X main.date=${@time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(int(d.getVar('SOURCE_DATE_EPOCH'))))}"

# The fieldgate user in dialout (serial ports); systemd-sysusers would also
# create it from the sysusers.d file, useradd does it at rootfs time so that
# a read-only root file system has it already.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/fieldgate --no-create-home --shell /sbin/nologin --user-group --groups dialout fieldgate"

SYSTEMD_SERVICE:${PN} = "fieldgate.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

FIELDGATE_SRC = "${S}/src/${GO_IMPORT}"

do_install:append() {
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/fieldgate.service ${D}${systemd_system_unitdir}/fieldgate.service
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/sysusers.d/fieldgate.conf ${D}${nonarch_libdir}/sysusers.d/fieldgate.conf
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/tmpfiles.d/fieldgate.conf ${D}${nonarch_libdir}/tmpfiles.d/fieldgate.conf
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/sysctl.d/60-fieldgate-quic.conf ${D}${nonarch_libdir}/sysctl.d/60-fieldgate-quic.conf
    install -D -m 0644 ${FIELDGATE_SRC}/systemd/fieldgate.yaml ${D}${sysconfdir}/fieldgate/fieldgate.yaml
    # State lives on the data partition (see fieldgate-sdimage.wks); the
    # directory exists in the image as its mount point.
    install -d -m 0750 -o fieldgate -g fieldgate ${D}${localstatedir}/lib/fieldgate
    # go-mod installs the Go sources for -dev; the appliance does not need them.
    rm -rf ${D}${libdir}/go
}

# The factory config: a package upgrade keeps the technician's changes.
CONFFILES:${PN} = "${sysconfdir}/fieldgate/fieldgate.yaml"

FILES:${PN} += " \
    ${systemd_system_unitdir}/fieldgate.service \
    ${nonarch_libdir}/sysusers.d/fieldgate.conf \
    ${nonarch_libdir}/tmpfiles.d/fieldgate.conf \
    ${nonarch_libdir}/sysctl.d/60-fieldgate-quic.conf \
    ${sysconfdir}/fieldgate \
    ${localstatedir}/lib/fieldgate \
"
