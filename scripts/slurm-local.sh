#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the Slurm executor's tests and benchmark.
#
#   scripts/slurm-local.sh start             install slurm-wlm + munge if missing, configure, start,
#                                            wait until the node is idle (idempotent)
#   scripts/slurm-local.sh stop              stop slurmd, slurmctld and munged
#   scripts/slurm-local.sh stop-controller   stop only slurmctld (running jobs carry on)
#   scripts/slurm-local.sh status            sinfo
#
# Needs root (it installs Debian packages and writes /etc/slurm, /etc/munge). No cgroups, no
# systemd: proctrack/linuxproc, task/none; CPUs and memory are read from this machine.
# Environment: SLURM_LOCAL_PARTITION (default "debug"), SLURM_LOCAL_TIMEOUT_S (default 90).
set -euo pipefail

PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
TIMEOUT_S="${SLURM_LOCAL_TIMEOUT_S:-90}"
CONF=/etc/slurm/slurm.conf
STATE=/var/lib/slurm-local
LOGS=/var/log/slurm-local

log() { echo "slurm-local: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
        slurm-wlm munge </dev/null >/dev/null
}

write_config() {
    local host cpus mem_mib
    host="$(hostname -s)"
    if ! getent hosts "$host" >/dev/null; then
        log "adding $host to /etc/hosts (the daemons look it up)"
        echo "127.0.0.1 $host" >>/etc/hosts
    fi
    cpus="$(nproc --all)"
    mem_mib=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS"
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: one node, no cgroups, no accounting database.
ClusterName=matloop-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
ReturnToService=2
SlurmctldTimeout=120
SlurmdTimeout=120
InactiveLimit=0
KillWait=5
MinJobAge=600
MessageTimeout=10
SchedulerParameters=sched_interval=5
DefMemPerCPU=$((mem_mib / cpus))
NodeName=$host CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating the munge key"
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge 2>/dev/null || true
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
}

running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_daemons() {
    if ! munge -n </dev/null >/dev/null 2>&1; then
        log "starting munged"
        if id munge >/dev/null 2>&1; then
            runuser -u munge -- munged --force
        else
            munged --force
        fi
    fi
    if ! running "$STATE/slurmctld.pid"; then
        log "starting slurmctld"
        slurmctld </dev/null
    fi
    if ! running "$STATE/slurmd.pid"; then
        log "starting slurmd"
        slurmd </dev/null
    fi
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT_S)) state
    while ((SECONDS < deadline)); do
        state="$(sinfo -h -p "$PARTITION" -o %T 2>/dev/null | head -1 || true)"
        case "$state" in
        idle | mixed | allocated)
            log "node $state"
            return 0
            ;;
        down* | drain*)
            scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
            ;;
        esac
        sleep 1
    done
    log "node not idle after ${TIMEOUT_S} s; logs in $LOGS"
    tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
    return 1
}

stop_pid() {
    local pidfile="$1" name="$2" pid
    running "$pidfile" || return 0
    pid="$(cat "$pidfile")"
    log "stopping $name ($pid)"
    kill "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop_munged() {
    local pidfile=/run/munge/munged.pid
    [[ -s "$pidfile" ]] && stop_pid "$pidfile" munged
    return 0
}

case "${1:-start}" in
start)
    [[ $EUID -eq 0 ]] || { log "run as root"; exit 1; }
    install_packages
    write_config
    start_daemons
    wait_idle
    ;;
stop)
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
    stop_pid "$STATE/slurmd.pid" slurmd
    stop_pid "$STATE/slurmctld.pid" slurmctld
    stop_munged
    ;;
stop-controller)
    stop_pid "$STATE/slurmctld.pid" slurmctld
    ;;
status)
    sinfo
    ;;
*)
    log "usage: $0 start|stop|stop-controller|status"
    exit 2
    ;;
esac
