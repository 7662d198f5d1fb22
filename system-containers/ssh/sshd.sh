#!/bin/sh
# dropbear with a host key kept on the state partition (/var/lib/ssh is the host's
# /var/lib/sysctr/ssh), generated on first boot so the image carries no secret and the key
# survives reboots. Logins: public keys from the boot config only (/root/.ssh/authorized_keys
# is a symlink into /run/bootconfig); -s refuses every password login.
set -e
# syslog for login sessions (`logger`): the logging service's socket directory is mounted at
# /run/syslog; /dev/log is a symlink into it so a restarted syslogd is still reached.
ln -sf /run/syslog/log /dev/log
key=/var/lib/ssh/dropbear_ed25519_host_key
if [ ! -s "$key" ]; then
    echo "ssh: first boot: generating the host key"
    dropbearkey -t ed25519 -f "$key.new" >/dev/null
    mv "$key.new" "$key"
fi
dropbearkey -y -f "$key" | grep -i fingerprint || true
# -F foreground, -E log to stderr (init keeps it), -s no passwords, -j/-k no port forwarding.
exec dropbear -F -E -s -j -k -p 22 -r "$key"
