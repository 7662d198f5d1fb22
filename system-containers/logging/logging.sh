#!/bin/sh
# The syslog receiver. busybox syslogd always listens on /dev/log but follows a symlink
# there, so /dev/log points into /run/syslog, which is the host's /run/sysctr/syslog.
# Other containers bind-mount that directory and reach the socket as /run/syslog/log (or
# via their own /dev/log symlink). Because they share the directory, not the socket inode,
# a restarted syslogd's new socket is seen by every client at once.
ln -sf /run/syslog/log /dev/log
# Kernel messages into syslog as well (the console keeps its own copy).
klogd -n -c 3 &
# Rotation: Debian's busybox syslogd is built without -s/-b, but it reopens its file at
# most once a second, so moving the file away is enough. Keep 4 old files of ~1 MiB.
(
    while :; do
        sleep 30
        size=$(stat -c %s /var/log/messages 2>/dev/null || echo 0)
        if [ "$size" -gt 1048576 ]; then
            for i in 3 2 1 0; do
                [ -f /var/log/messages.$i ] && mv /var/log/messages.$i /var/log/messages.$((i + 1))
            done
            mv /var/log/messages /var/log/messages.0
        fi
    done
) &
# -n foreground, -O the file on the state partition (/var/log is the host's /var/log/syslog).
exec syslogd -n -O /var/log/messages
