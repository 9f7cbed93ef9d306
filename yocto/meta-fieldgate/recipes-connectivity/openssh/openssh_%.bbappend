# fieldgate: the SSH host keys of the read-only root are made once on the
# data partition (fieldgate-os mounts it at /data) instead of in /var/run,
# so they survive reboots and updates.
OPENSSH_HOST_KEY_DIR_READONLY_CONFIG = "/data/ssh"
