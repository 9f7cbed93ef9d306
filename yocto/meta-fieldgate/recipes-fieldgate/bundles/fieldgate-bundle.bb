SUMMARY = "fieldgate update bundle: the root file system of fieldgate-image, signed for RAUC"
LICENSE = "MIT"

inherit bundle

RAUC_BUNDLE_FORMAT = "verity"
# Must match [system] compatible= in the image's system.conf.
RAUC_BUNDLE_COMPATIBLE = "fieldgate-${MACHINE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "fieldgate appliance root file system"

RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "fieldgate-image"
RAUC_SLOT_rootfs[fstype] = "ext4"

# The TEST-ONLY keys unless the build names the product's (fieldgate-appliance.conf).
RAUC_KEY_FILE = "${FIELDGATE_RAUC_KEY}"
RAUC_CERT_FILE = "${FIELDGATE_RAUC_CERT}"
RAUC_KEYRING_FILE = "${FIELDGATE_RAUC_KEYRING}"
