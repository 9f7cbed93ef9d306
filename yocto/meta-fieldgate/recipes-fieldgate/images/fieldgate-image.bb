SUMMARY = "fieldgate appliance image: core-image-minimal with the gateway and a technician's tools"
LICENSE = "MIT"

require recipes-core/images/core-image-minimal.bb

# A technician logs in over SSH (key in /home/root/.ssh or set with
# EXTRA_USERS_PARAMS) and finds: the gateway, MQTT clients to watch the bus,
# network and disk tools, and the journal.
IMAGE_FEATURES += "ssh-server-openssh read-only-rootfs"
IMAGE_INSTALL:append = " \
    fieldgate \
    mosquitto-clients \
    iproute2 \
    iputils-ping \
    ethtool \
    tcpdump \
    curl \
    less \
    nano \
    e2fsprogs-e2fsck \
    e2fsprogs-resize2fs \
    util-linux-lsblk \
    kernel-modules \
"

# Root is read-only; /var/lib/fieldgate is the data partition (ext4, label
# "data") laid out by the kickstart file; the rest of /var/lib is volatile.
WKS_FILE = "fieldgate-sdimage.wks"
WKS_FILE:qemuarm64 = "fieldgate-qemu.wks"
IMAGE_FSTYPES:append = " wic.bz2 wic.bmap"

# The journal lives in RAM (volatile /var/log) and is capped.
IMAGE_ROOTFS_EXTRA_SPACE = "65536"
