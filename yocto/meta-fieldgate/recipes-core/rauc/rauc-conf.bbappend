# fieldgate's RAUC system.conf (two root slots, u-boot or noop) and keyring.
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"

# The keyring comes from FIELDGATE_RAUC_KEYRING (fieldgate-appliance.conf): the
# TEST-ONLY CA unless the build names the product's.
RAUC_KEYRING_FILE = "fieldgate-keyring.pem"
RAUC_KEYRING_URI = ""
do_install[file-checksums] += "${FIELDGATE_RAUC_KEYRING}:True"

# u-boot picks the slot on boards (boot.scr); runqemu boots slot A's kernel
# directly, so on QEMU RAUC installs into slot B but cannot switch to it.
FIELDGATE_RAUC_BOOTLOADER ?= "uboot"
FIELDGATE_RAUC_BOOTLOADER:qemuall ?= "noop"

do_install:prepend() {
    install -m 0644 ${FIELDGATE_RAUC_KEYRING} ${UNPACKDIR}/${RAUC_KEYRING_FILE}
    sed -i -e 's|@MACHINE@|${MACHINE}|g' -e 's|@DISK@|${FIELDGATE_DISK}|g' \
           -e 's|@BOOTLOADER@|${FIELDGATE_RAUC_BOOTLOADER}|g' \
           -e 's|@KEYRING@|${nonarch_libdir}/rauc/${RAUC_KEYRING_FILE}|g' \
        ${UNPACKDIR}/system.conf
}
