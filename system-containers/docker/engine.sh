#!/bin/sh
# The node's container engine: containerd, then dockerd on top of it, then the swarm role.
#
# Runs as the container's PID 1 in a privileged container sharing the host network and uts
# namespaces, with a private cgroup namespace whose root is this service's cgroup
# (/sys/fs/cgroup/sysctr/docker on the host). cgroup v2 allows processes only in leaves of a
# tree with controllers enabled, so this script first moves itself into the leaf `engine`,
# then enables the controllers for the subtree: runc then creates each container's cgroup
# under /docker (dockerd, cgroupfs driver) or /k8s.io (a kubelet through CRI).
#
# Swarm settings (all optional) come from the boot config's `swarm` object, which init has
# merged from its sources (ESP sysctr/config.json, fw_cfg opt/sysctr/config, kernel command
# line words sysctr.swarm.role/manager/advertise), checked, and written to
# /run/bootconfig/swarm.env (init/src/bootconfig/swarm.rs, docs/cluster.md):
#   ROLE=manager|worker   manager: `docker swarm init` if not in a swarm yet;
#                         worker: `docker swarm join` (retried until it works)
#   MANAGER=HOST:PORT     the manager a worker joins
#   TOKEN=SWMTKN-1-...    the worker's join token
#   ADVERTISE=ADDR        the address other nodes reach this one at (default: the static
#                         address from the boot config, else the first global IPv4 address)
# A node already in a swarm (state in /var/lib/docker/swarm) rejoins by itself at boot.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
API=/run/docker-api
SOCK=$API/docker.sock
export DOCKER_HOST=unix://$SOCK
rm -f "$API/ready" "$API/swarm"

log() { echo "docker: $*"; }

# --- cgroup delegation -----------------------------------------------------------------------
CG=/sys/fs/cgroup
if [ -w "$CG/cgroup.subtree_control" ]; then
    mkdir -p "$CG/engine"
    echo $$ > "$CG/engine/cgroup.procs" || { log "cannot move into $CG/engine"; exit 1; }
    enable=""
    for c in $(cat "$CG/cgroup.controllers"); do enable="$enable +$c"; done
    if [ -n "$enable" ]; then
        echo "$enable" > "$CG/cgroup.subtree_control" \
            || { log "cannot enable$enable for the engine's subtree"; exit 1; }
    fi
    log "cgroup subtree delegated, controllers:$enable"
else
    log "$CG is not writable: the service must be privileged with its own cgroup namespace"
    exit 1
fi

# --- swarm settings --------------------------------------------------------------------------
ROLE="" MANAGER="" TOKEN="" ADVERTISE=""
SWARM_ENV=/run/bootconfig/swarm.env
if [ -r "$SWARM_ENV" ]; then
    while IFS='=' read -r key value; do
        case "$key" in
        ROLE) ROLE=$value ;;
        MANAGER) MANAGER=$value ;;
        TOKEN) TOKEN=$value ;;
        ADVERTISE) ADVERTISE=$value ;;
        esac
    done < "$SWARM_ENV"
fi
if [ -z "$ADVERTISE" ] && [ -r /run/bootconfig/network.env ]; then
    ADVERTISE=$(sed -n 's/^ADDRESS=//p' /run/bootconfig/network.env | tr -d "'\"" | cut -d/ -f1)
fi
if [ -z "$ADVERTISE" ]; then
    ADVERTISE=$(ip -4 -o addr show scope global | awk '{print $4; exit}' | cut -d/ -f1)
fi

# --- the daemons -------------------------------------------------------------------------
CONTAINERD_PID="" DOCKERD_PID=""
stop() {
    log "stopping"
    [ -n "$DOCKERD_PID" ] && kill -TERM "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID"
    [ -n "$CONTAINERD_PID" ] && kill -TERM "$CONTAINERD_PID" 2>/dev/null && wait "$CONTAINERD_PID"
    exit 0
}
trap stop TERM INT

containerd --config /etc/containerd/config.toml &
CONTAINERD_PID=$!
n=0
until [ -S /run/containerd/containerd.sock ]; do
    n=$((n + 1))
    kill -0 "$CONTAINERD_PID" 2>/dev/null || { log "containerd exited"; exit 1; }
    [ "$n" -ge 3600 ] && { log "containerd did not open its socket in 1800 s"; exit 1; }
    sleep 0.5
done
log "containerd up (CRI and API on /run/containerd/containerd.sock)"

dockerd --containerd=/run/containerd/containerd.sock -H "unix://$SOCK" \
    --data-root /var/lib/docker --exec-opt native.cgroupdriver=cgroupfs \
    --storage-driver overlay2 --userland-proxy=false &
DOCKERD_PID=$!
n=0
until docker version >/dev/null 2>&1; do
    n=$((n + 1))
    kill -0 "$DOCKERD_PID" 2>/dev/null || { log "dockerd exited"; kill "$CONTAINERD_PID"; exit 1; }
    [ "$n" -ge 3600 ] && { log "dockerd did not answer in 1800 s"; kill "$CONTAINERD_PID"; exit 1; }
    sleep 0.5
done
log "dockerd up ($SOCK)"
touch "$API/ready"

# --- swarm role (in the background: a worker may wait for its manager) ------------------------
swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }
join_swarm() {
    state=$(swarm_state)
    if [ "$state" = active ] || [ "$state" = pending ]; then
        log "swarm: already a member ($state); docker rejoins by itself"
        echo "$state" > "$API/swarm"
        return 0
    fi
    case "$ROLE" in
    "") log "swarm: no swarm role in the boot config: not joining"; return 0 ;;
    manager)
        case "$ADVERTISE" in *:*) LISTEN="[$ADVERTISE]:2377" ;; *) LISTEN="$ADVERTISE:2377" ;; esac
        until docker swarm init --advertise-addr "$ADVERTISE" --listen-addr "$LISTEN"; do
            log "swarm: init failed; retrying in 5 s"
            sleep 5
        done
        log "swarm: initialised, manager at $ADVERTISE:2377"
        ;;
    worker)
        until docker swarm join --token "$TOKEN" --advertise-addr "$ADVERTISE" "$MANAGER" 2>&1; do
            # A join that timed out may still have gone through.
            state=$(swarm_state)
            if [ "$state" = active ] || [ "$state" = pending ]; then break; fi
            log "swarm: join $MANAGER failed; retrying in 5 s"
            sleep 5
        done
        log "swarm: joined $MANAGER as a worker"
        ;;
    esac
    swarm_state > "$API/swarm"
}
join_swarm &

# Whichever daemon exits first ends the service (init restarts it); TERM stops both.
while kill -0 "$DOCKERD_PID" 2>/dev/null && kill -0 "$CONTAINERD_PID" 2>/dev/null; do
    sleep 5 &
    wait $!
done
log "a daemon exited; stopping the other"
kill -TERM "$DOCKERD_PID" "$CONTAINERD_PID" 2>/dev/null
wait
exit 1
