#!/bin/sh
# DEVELOPMENT IMAGE ONLY: a root shell on the serial console without a login.
# Built only by `cargo xtask image --dev` / `cargo xtask run`; production images run getty.
exec </dev/ttyS0 >/dev/ttyS0 2>&1
echo
echo "*** sysctr DEVELOPMENT image: root shell on the console without login ***"
echo "*** try: sysctr ps ***"
# setsid -c: a new session with the serial port as controlling terminal, so job control
# and Ctrl-C work.
exec setsid -c sh -l
