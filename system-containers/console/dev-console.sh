#!/bin/sh
# DEVELOPMENT IMAGE ONLY: a root shell on the console without a login.
# Built only by `cargo xtask image --dev` / `cargo xtask run`; production images run getty.
exec </dev/ttyS0 >/dev/ttyS0 2>&1
echo
echo "*** sysctr DEVELOPMENT image: root shell on the console without login ***"
echo "*** try: sysctr ps ***"
# The shell needs its own session with the serial port as controlling terminal (job
# control, Ctrl-C). `setsid` only avoids forking when its caller is not a process group
# leader, so start it as a background child (same group as us) and wait for it; the
# service's process lives as long as the shell. stdin is redirected explicitly because a
# background job's stdin is otherwise /dev/null.
setsid -c sh -l </dev/ttyS0 &
shell=$!
trap 'kill -HUP $shell 2>/dev/null; exit 0' HUP TERM
wait $shell
