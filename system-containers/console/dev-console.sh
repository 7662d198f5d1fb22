#!/bin/sh
# DEVELOPMENT IMAGE ONLY: a root shell on the console without a login.
# Built only by `cargo xtask image --dev` / `cargo xtask run`; production images run getty.
#
# The runtime starts us as a session leader with no controlling terminal, so opening the
# serial port here (without O_NOCTTY) makes it our controlling terminal: the shell we exec
# into gets job control and Ctrl-C. (A `setsid -c` child could not take it over any more:
# stealing a controlling terminal needs CAP_SYS_ADMIN.)
exec </dev/ttyS0 >/dev/ttyS0 2>&1
echo
echo "*** sysctr DEVELOPMENT image: root shell on the console without login ***"
echo "*** try: sysctr ps ***"
exec sh -l
