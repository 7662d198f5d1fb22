#!/bin/sh
# The in-guest part of `cargo xtask bench`, run over ssh as `sh -s RUNS` (busybox sh in the
# ssh container, which has the sysctr CLI and the control socket). Prints one line per
# figure for xtask/src/bench.rs to parse:
#   start_us SERVICE MICROSECONDS         init's create+start time of one run of SERVICE
#   loop NAME RUNS UPTIME_BEFORE UPTIME_AFTER
#                                         a command run RUNS times between two /proc/uptime
#                                         reads (busybox has no sub-second clock)
n=${1:-20}
svc=${BENCH_SERVICE:-time}

i=0
while [ "$i" -lt "$n" ]; do
	sysctr stop "$svc" >/dev/null 2>&1
	# stop returns once the signal is sent; start is refused until the exit is reaped.
	j=0
	until sysctr start "$svc" >/dev/null 2>&1; do
		j=$((j + 1))
		[ "$j" -gt 200 ] && break
		sleep 0.02
	done
	us=$(sysctr inspect "$svc" | grep -o '"start_us": *[0-9]*' | head -n 1 | grep -o '[0-9]*$')
	echo "start_us $svc ${us:-none}"
	i=$((i + 1))
done

# Each loop forks and execs its command (busybox sh runs a path with a slash as a program).
timed() {
	name=$1
	shift
	read -r a _ </proc/uptime
	i=0
	while [ "$i" -lt "$n" ]; do
		"$@" >/dev/null
		i=$((i + 1))
	done
	read -r b _ </proc/uptime
	echo "loop $name $n $a $b"
}
timed ps /usr/bin/sysctr ps
timed cli-version /usr/bin/sysctr --version
timed true /bin/true
