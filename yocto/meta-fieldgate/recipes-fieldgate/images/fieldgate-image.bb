SUMMARY = "fieldgate appliance image: core-image-minimal with the gateway, RAUC A/B updates and a technician's tools"
LICENSE = "MIT"

require recipes-core/images/core-image-minimal.bb

# A technician logs in as "tech" on the serial console or over SSH
# (fieldgate-os). The root file system is read-only; /data is the data
# partition.
IMAGE_FEATURES += "ssh-server-openssh read-only-rootfs"
IMAGE_INSTALL:append = " \
    fieldgate \
    fieldgate-os \
    rauc \
    mosquitto-clients \
    iproute2 \
    iputils-ping \
    ethtool \
    tcpdump \
    curl \
    less \
    nano \
    sudo \
    e2fsprogs-mke2fs \
    e2fsprogs-e2fsck \
    e2fsprogs-resize2fs \
    e2fsprogs-tune2fs \
    util-linux-lsblk \
    util-linux-blkid \
    dosfstools \
    kernel-modules \
"
# Each root slot boots its own kernel (u-boot loads /boot/Image from the
# slot it picked), so an update brings the kernel with it.
IMAGE_INSTALL:append:rpi = " kernel-image u-boot-fw-utils u-boot-env"

# The gateway marks a new slot good itself once it has run healthy for a
# while; RAUC's unconditional mark-good at boot would defeat the rollback.
BAD_RECOMMENDATIONS += "rauc-mark-good"

# wic for the card (and runqemu), ext4 for the update bundle's root slot.
IMAGE_FSTYPES = "wic wic.bz2 wic.bmap ext4"
WKS_FILE = "fieldgate-sdimage.wks.in"
WKS_FILE:qemuall = "fieldgate-qemu.wks.in"
WKS_FILE_DEPENDS:append:qemuall = " virtual/kernel"
IMAGE_BOOT_FILES:qemuall = "${KERNEL_IMAGETYPE}"
do_image_wic[depends] += "virtual/kernel:do_deploy"

# runqemu: root is slot A, the second partition of the virtio disk.
QB_DEFAULT_FSTYPE:qemuall = "wic"
QB_KERNEL_ROOT:qemuall = "${FIELDGATE_DISK}2 ro rootwait"

# An update bundle must fit the slot: keep the root file system well under
# FIELDGATE_ROOT_SIZE_MB (the wks fails the build otherwise).
IMAGE_ROOTFS_MAXSIZE = "${@int(d.getVar('FIELDGATE_ROOT_SIZE_MB')) * 1024}"
IMAGE_ROOTFS_EXTRA_SPACE = "65536"
