#!/bin/sh
# Network configuration for the host network namespace.
#
# Boot config (/run/bootconfig/network.env, written by init from fw_cfg) chooses the mode:
#   MODE=dhcp                     (default) busybox udhcpc in the foreground, lease renewed
#   MODE=static ADDRESS=a.b.c.d/n GATEWAY=... DNS="x y"
# INTERFACE=... overrides the interface; otherwise the first ethernet device is used.
# /run/net is the host's /run/sysctr/net: resolv.conf for everyone and the `ready` marker.
set -u
MODE=dhcp
INTERFACE=
ADDRESS=
GATEWAY=
DNS=
[ -r /run/bootconfig/network.env ] && . /run/bootconfig/network.env

# The first interface that is ethernet (type 1) and backed by a device (not veth/bridge).
first_ethernet() {
    for dev in /sys/class/net/*; do
        [ "$(cat "$dev/type" 2>/dev/null)" = 1 ] || continue
        [ -e "$dev/device" ] || continue
        basename "$dev"
        return 0
    done
    return 1
}

ip link set lo up
iface=${INTERFACE:-}
tries=0
while [ -z "$iface" ]; do
    iface=$(first_ethernet) && break
    tries=$((tries + 1))
    if [ "$tries" -ge 50 ]; then
        echo "network: no ethernet interface found" >&2
        exit 1
    fi
    sleep 0.2
done
echo "network: interface $iface, mode $MODE"
ip link set "$iface" up

case "$MODE" in
static)
    [ -n "$ADDRESS" ] || { echo "network: MODE=static needs ADDRESS" >&2; exit 1; }
    ip addr flush dev "$iface"
    ip addr add "$ADDRESS" dev "$iface"
    [ -n "$GATEWAY" ] && ip route add default via "$GATEWAY" dev "$iface"
    : > /run/net/resolv.conf.new
    for ns in $DNS; do echo "nameserver $ns" >> /run/net/resolv.conf.new; done
    mv /run/net/resolv.conf.new /run/net/resolv.conf
    touch /run/net/ready
    echo "network: $iface configured statically with $ADDRESS"
    # Stay running so the service shows as up; exit cleanly on SIGTERM (we are the
    # container's PID 1, which ignores signals without a handler).
    trap 'exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
    ;;
*)
    # -f foreground, -R release the lease on exit, no -n: keep trying until a server answers.
    exec udhcpc -f -R -i "$iface" -s /usr/libexec/udhcpc-script -t 4 -T 3 -A 5 \
        -x "hostname:$(hostname)"
    ;;
esac
