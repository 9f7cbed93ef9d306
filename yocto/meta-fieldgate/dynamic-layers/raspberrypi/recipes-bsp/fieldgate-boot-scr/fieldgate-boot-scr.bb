SUMMARY = "u-boot boot script for the fieldgate A/B root slots (RAUC)"
DESCRIPTION = "Picks root slot A or B from u-boot's BOOT_ORDER and \
BOOT_<slot>_LEFT variables (RAUC's u-boot backend), loads that slot's kernel \
and boots it with rauc.slot=<slot>; falls back to the other slot when a slot \
has used up its tries."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"
COMPATIBLE_MACHINE = "^rpi$"

DEPENDS = "u-boot-mkimage-native"
INHIBIT_DEFAULT_DEPS = "1"

SRC_URI = "file://boot.cmd.in"
S = "${UNPACKDIR}"

# meta-raspberrypi's u-boot depends on u-boot-default-script; fieldgate-appliance.conf
# makes this recipe its provider (instead of rpi-u-boot-scr).
PROVIDES += "u-boot-default-script"

inherit kernel-arch deploy nopackages

do_compile() {
    sed -e 's/@@KERNEL_IMAGETYPE@@/${KERNEL_IMAGETYPE}/g' \
        -e 's/@@KERNEL_BOOTCMD@@/${KERNEL_BOOTCMD}/g' \
        -e 's|@@DISK@@|${FIELDGATE_DISK}|g' \
        "${UNPACKDIR}/boot.cmd.in" > "${WORKDIR}/boot.cmd"
    mkimage -A ${UBOOT_ARCH} -T script -C none -n "fieldgate A/B boot script" -d "${WORKDIR}/boot.cmd" boot.scr
}

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 boot.scr ${DEPLOYDIR}
}
addtask do_deploy after do_compile before do_build
