#!/usr/bin/env bash
# A single-node SLURM on this machine, for CI and for trying the batch scripts: `up`, `down`, `status`.
#
#   deploy/slurm/local-slurm.sh up      # install Debian's slurm + munge if missing, start munged/slurmctld/slurmd
#   deploy/slurm/local-slurm.sh status  # sinfo, or a non-zero exit when SLURM does not answer
#   deploy/slurm/local-slurm.sh down    # stop what `up` started, remove what it wrote (packages stay installed)
#
# Runs as root without systemd. The node has LOCAL_SLURM_GPUS fake GPUs (GRES whose device files are
# symlinks to /dev/null, so jobs get CUDA_VISIBLE_DEVICES like on a real GPU node, and a CPU TensorFlow ignores it).
# Every call is idempotent. It never touches a slurm.conf it did not write: on a real cluster node it stops.
set -euo pipefail

STATE_DIR=${LOCAL_SLURM_STATE:-/var/lib/ifcbflow-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
MARK="# written by ifcbflow deploy/slurm/local-slurm.sh"
GPUS=${LOCAL_SLURM_GPUS:-2}
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "local-slurm: $*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        log "must run as root (it starts munged, slurmctld and slurmd)"
        exit 1
    fi
}

install_packages() {
    local missing=()
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        # No recommends: they pull in mail and monitoring daemons we do not want on a CI machine.
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
            || { DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
    fi
}

ours() { [[ -f $1 ]] && head -n 1 "$1" | grep -qF "$MARK"; }

# Writes slurm.conf and gres.conf; succeeds only when they changed.
write_config() {
    local host cpus mem_mb i
    if [[ -f $CONF ]] && ! ours "$CONF"; then
        log "$CONF exists and was not written by this script: refusing to replace a real SLURM configuration"
        exit 1
    fi
    host=$(hostname -s)
    cpus=$(nproc)
    # Leave ~10% (at least 512 MiB) to the system, as a real node would.
    mem_mb=$(free -m | awk '/^Mem:/ {m = int($2 * 0.9); if ($2 - m < 512) m = $2 - 512; print m}')
    mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$STATE_DIR/gpu"
    for ((i = 0; i < GPUS; i++)); do
        ln -sfn /dev/null "$STATE_DIR/gpu/fake-gpu$i"
    done
    local before
    before=$(cat "$CONF" "$GRES_CONF" 2>/dev/null || true)
    cat >"$CONF" <<EOF
$MARK
ClusterName=ifcbflow-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem_mb / cpus))
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=2
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    {
        echo "$MARK"
        echo "AutoDetect=off"
        if ((GPUS > 0)); then
            echo "NodeName=$host Name=gpu File=$STATE_DIR/gpu/fake-gpu[0-$((GPUS - 1))]"
        fi
    } >"$GRES_CONF"
    [[ $(cat "$CONF" "$GRES_CONF") != "$before" ]]
}

munge_up() { [[ -S /run/munge/munge.socket.2 ]] && munge -n </dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_up && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE_DIR/munged-started-here"
    local _
    for _ in $(seq 50); do munge_up && return 0; sleep 0.1; done
    log "munged did not start"
    exit 1
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n 1; }

up() {
    need_root
    install_packages
    mkdir -p "$STATE_DIR"
    if write_config; then
        # Daemons started with an older configuration (other GPU count, memory...) would keep it.
        stop_pidfile "$STATE_DIR/slurmd.pid"
        stop_pidfile "$STATE_DIR/slurmctld.pid"
    fi
    start_munge
    running "$STATE_DIR/slurmctld.pid" || slurmctld
    running "$STATE_DIR/slurmd.pid" || slurmd
    local state _
    for _ in $(seq 60); do
        state=$(node_state)
        case $state in
            idle* | mixed* | allocated* | completing*)
                log "up: node $(hostname -s) is $state"
                return 0
                ;;
            drain* | down*)
                # Left over from an earlier run (e.g. the machine rebooted under a running job).
                scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
                ;;
        esac
        sleep 0.5
    done
    log "node never became idle (state: ${state:-no answer}); see $STATE_DIR/slurmctld.log and slurmd.log"
    exit 1
}

stop_pidfile() {
    local pidfile=$1 pid _
    running "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    need_root
    if ! ours "$CONF"; then
        log "down: no local SLURM written by this script here; nothing to do"
        return 0
    fi
    scancel --quiet --user=root 2>/dev/null || true
    stop_pidfile "$STATE_DIR/slurmd.pid"
    stop_pidfile "$STATE_DIR/slurmctld.pid"
    if [[ -f $STATE_DIR/munged-started-here ]]; then
        stop_pidfile /run/munge/munged.pid
        rm -rf /run/munge
    fi
    rm -f "$CONF" "$GRES_CONF"
    rm -rf "$STATE_DIR"
    log "down: stopped and removed $STATE_DIR and the configuration"
}

status() {
    if sinfo >/dev/null 2>&1; then
        sinfo -N -o "%N %T %c %m %G"
    else
        log "SLURM does not answer (run: $0 up)"
        return 1
    fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
