#!/bin/sh
# The syslog receiver. busybox syslogd always listens on /dev/log but follows a symlink
# there, so /dev/log points into /run/syslog, which is the host's /run/sysctr/syslog.
# Other containers bind-mount that directory and reach the socket as /run/syslog/log (or
# via their own /dev/log symlink). Because they share the directory, not the socket inode,
# a restarted syslogd's new socket is seen by every client at once.
ln -sf /run/syslog/log /dev/log
# Kernel messages into syslog as well (the console keeps its own copy).
klogd -n -c 3 &
# -n foreground, -O file, -s/-b rotation: 1 MiB per file, 4 old files kept (5 MiB on /var).
exec syslogd -n -O /var/log/messages -s 1024 -b 4
