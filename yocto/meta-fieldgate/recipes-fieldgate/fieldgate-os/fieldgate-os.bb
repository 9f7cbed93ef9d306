SUMMARY = "fieldgate appliance integration: data partition, technician access, SSH keys"
DESCRIPTION = "Mounts the data partition (/data, with /data/fieldgate bound to \
/var/lib/fieldgate and the SSH host keys in /data/ssh), creates the technician \
account 'tech' (serial console and SSH with keys), and takes SSH keys put on the \
boot partition at the next boot."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = " \
    file://fstab.fieldgate \
    file://fieldgate-data-init.service \
    file://fieldgate-ssh-import.service \
    file://fieldgate-ssh-import \
    file://sshd-fieldgate.conf \
    file://sshdgenkeys-data.conf \
    file://serial-getty-autologin.conf \
    file://sudoers-tech \
    file://fieldgate-rauc.conf \
    file://fieldgate-rauc-dbus.conf \
"
S = "${UNPACKDIR}"

inherit systemd useradd allarch

# tech: the technician's account. It has sudo (to run systemctl, rauc,
# fieldgate reset, mkfs.ext4) and reads the journal. Without a password
# hash (FIELDGATE_TECH_PASSWORD_HASH, fieldgate-appliance.conf) the account has no
# password: SSH takes keys only, and the serial console logs tech in by
# itself (whoever holds the board's serial console owns the board anyway).
USERADD_PACKAGES = "${PN}"
FIELDGATE_TECH_PASSWORD_OPT = "${@'--password \'%s\'' % d.getVar('FIELDGATE_TECH_PASSWORD_HASH') if d.getVar('FIELDGATE_TECH_PASSWORD_HASH') else ''}"
USERADD_PARAM:${PN} = "--create-home --home-dir /home/tech --shell /bin/sh --groups dialout,systemd-journal,adm --user-group ${FIELDGATE_TECH_PASSWORD_OPT} tech"

# A/B updates: the gateway runs with `-update rauc` (the drop-in
# fieldgate.service.d/10-rauc.conf) and marks the booted slot good itself
# once its /readyz has answered healthy this long without a break (a Go
# duration: 10m, 1h30m). It is the only mark-good on the image: RAUC's own
# rauc-mark-good, which marks every boot good, is left out of the image.
# Its D-Bus policy lets the fieldgate user call RAUC's Installer.
FIELDGATE_MARK_GOOD_AFTER ?= "10m"

SYSTEMD_SERVICE:${PN} = "fieldgate-data-init.service fieldgate-ssh-import.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    # Mount points on the read-only root.
    install -d ${D}/data
    # fstab lines, appended to base-files' /etc/fstab at rootfs time (below).
    install -D -m 0644 ${S}/fstab.fieldgate ${D}${datadir}/fieldgate-os/fstab.fieldgate

    install -D -m 0644 ${S}/fieldgate-data-init.service ${D}${systemd_system_unitdir}/fieldgate-data-init.service
    install -D -m 0644 ${S}/fieldgate-ssh-import.service ${D}${systemd_system_unitdir}/fieldgate-ssh-import.service
    install -D -m 0755 ${S}/fieldgate-ssh-import ${D}${libexecdir}/fieldgate-os/fieldgate-ssh-import
    install -D -m 0644 ${S}/fieldgate-rauc.conf ${D}${systemd_system_unitdir}/fieldgate.service.d/10-rauc.conf
    sed -i -e 's|@MARK_GOOD_AFTER@|${FIELDGATE_MARK_GOOD_AFTER}|g' ${D}${systemd_system_unitdir}/fieldgate.service.d/10-rauc.conf
    install -D -m 0644 ${S}/fieldgate-rauc-dbus.conf ${D}${datadir}/dbus-1/system.d/fieldgate-rauc.conf
    sed -i -e 's|@LIBEXECDIR@|${libexecdir}|g' ${D}${systemd_system_unitdir}/fieldgate-ssh-import.service

    # sshd: keys only, host keys on the data partition, build-time keys in
    # /etc/ssh/authorized_keys/tech, boot-partition keys in /data/ssh/.
    install -D -m 0644 ${S}/sshd-fieldgate.conf ${D}${sysconfdir}/ssh/sshd_config.d/50-fieldgate.conf
    install -D -m 0644 ${S}/sshdgenkeys-data.conf ${D}${systemd_system_unitdir}/sshdgenkeys.service.d/50-fieldgate-data.conf
    install -d -m 0755 ${D}${sysconfdir}/ssh/authorized_keys
    printf '%s\n' "${FIELDGATE_SSH_AUTHORIZED_KEYS}" | tr ';' '\n' | sed -e 's/^ *//' -e '/^$/d' \
        > ${D}${sysconfdir}/ssh/authorized_keys/tech
    chmod 0644 ${D}${sysconfdir}/ssh/authorized_keys/tech

    install -D -m 0440 ${S}/sudoers-tech ${D}${sysconfdir}/sudoers.d/50-fieldgate-tech

    if [ -z "${FIELDGATE_TECH_PASSWORD_HASH}" ]; then
        install -D -m 0644 ${S}/serial-getty-autologin.conf \
            ${D}${systemd_system_unitdir}/serial-getty@.service.d/50-fieldgate-autologin.conf
    fi
}
do_install[vardeps] += "FIELDGATE_SSH_AUTHORIZED_KEYS FIELDGATE_TECH_PASSWORD_HASH"

pkg_postinst:${PN}() {
    # /etc is read-only on the device: add the mounts at rootfs time.
    if ! grep -q '^# fieldgate-os' $D${sysconfdir}/fstab; then
        cat $D${datadir}/fieldgate-os/fstab.fieldgate >> $D${sysconfdir}/fstab
    fi
}

FILES:${PN} += " \
    /data \
    ${datadir}/fieldgate-os \
    ${systemd_system_unitdir} \
    ${libexecdir}/fieldgate-os \
    ${sysconfdir}/ssh/sshd_config.d \
    ${sysconfdir}/ssh/authorized_keys \
    ${sysconfdir}/sudoers.d \
    ${datadir}/dbus-1/system.d \
"
RDEPENDS:${PN} = "fieldgate openssh-sshd sudo util-linux-agetty rauc"
