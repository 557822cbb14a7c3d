#!/usr/bin/env bash
# A throwaway Slurm cluster on loopback: one slurmctld and two emulated nodes (node1, node2),
# each a `slurmd -N nodeX` on 127.0.0.1 with its own port, with 2 CPUs and 2 fake GPUs (GRES) each.
#
#   slurm/local_cluster.sh start    # install the Debian packages if missing, start, wait for idle nodes
#   slurm/local_cluster.sh status   # sinfo + squeue; exit 1 when not running
#   slurm/local_cluster.sh stop     # cancel all jobs, stop only the daemons this script started
#   eval "$(slurm/local_cluster.sh env)"   # sets SLURM_CONF in your shell
#
# Environment:
#   SLURM_LOCAL_DIR            state folder (default /tmp/jrnet-slurm); holds etc/slurm.conf, logs, pid files
#   SLURM_LOCAL_PORT_BASE      slurmctld port (default 16817); slurmd uses +1, node1/node2 +101/+102
#   SLURM_LOCAL_START_TIMEOUT  seconds to wait for both nodes to be idle (default 90)
#   SLURM_LOCAL_STOP_TIMEOUT   seconds to wait for the queue to drain / daemons to exit (default 30)
#
# Exit codes: 0 ok, 1 failure (or `status`: not running), 2 usage,
#             3 unavailable here (not root, or the packages cannot be installed): tests skip on it.
set -euo pipefail

readonly EXIT_UNAVAILABLE=3
readonly PACKAGES=(slurmctld slurmd slurm-client munge)
readonly NODES=(node1 node2)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly TEMPLATE="$SCRIPT_DIR/slurm.conf.in"

D=${SLURM_LOCAL_DIR:-/tmp/jrnet-slurm}
PORT_BASE=${SLURM_LOCAL_PORT_BASE:-16817}
START_TIMEOUT=${SLURM_LOCAL_START_TIMEOUT:-90}
STOP_TIMEOUT=${SLURM_LOCAL_STOP_TIMEOUT:-30}
CONF="$D/etc/slurm.conf"
RUN="$D/run"
LOG="$D/log"
export SLURM_CONF="$CONF"

log() { printf '[local_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
unavailable() { log "UNAVAILABLE: $*"; exit "$EXIT_UNAVAILABLE"; }

hint() {
    printf 'export SLURM_CONF=%s\n' "$CONF"
}

check_settings() {
    case "$D" in
        /*) ;;
        *) die "SLURM_LOCAL_DIR must be an absolute path (got '$D')" ;;
    esac
    [[ "$D" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "SLURM_LOCAL_DIR may only hold [A-Za-z0-9_./+-] (got '$D')"
    local n
    for n in "$PORT_BASE" "$START_TIMEOUT" "$STOP_TIMEOUT"; do
        [[ "$n" =~ ^[0-9]+$ ]] || die "expected a number, got '$n'"
    done
}

# ---------------------------------------------------------------- processes and pid files

# pid_of FILE: the PID in FILE when that process is alive, else nothing (status 1).
pid_of() {
    local file=$1 pid
    [[ -s "$file" ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

# ours FILE COMM: the PID in FILE, only if it is alive and its command name is COMM
# (guards against a recycled PID in a stale pid file).
ours() {
    local file=$1 comm=$2 pid
    pid=$(pid_of "$file") || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
    printf '%s\n' "$pid"
}

ctld_pid() { ours "$RUN/slurmctld.pid" slurmctld; }
slurmd_pid() { ours "$RUN/slurmd-$1.pid" slurmd; }
our_munged_pid() { ours "$RUN/munged.pid" munged; }

# Every slurm daemon of this state folder that is alive, one PID a line.
our_slurm_pids() {
    ctld_pid || true
    local n
    for n in "${NODES[@]}"; do slurmd_pid "$n" || true; done
}

# node_states: "node state" lines from sinfo, or status 1 when the controller does not answer.
node_states() {
    timeout 15 sinfo -h -N -o '%N %T' 2>/dev/null
}

# healthy [STATES-REGEX]: our daemons are alive and both nodes are in an accepted state.
healthy() {
    local accept=${1:-'^(idle|mixed|allocated|completing)$'} states n st
    ctld_pid >/dev/null || return 1
    for n in "${NODES[@]}"; do slurmd_pid "$n" >/dev/null || return 1; done
    states=$(node_states) || return 1
    for n in "${NODES[@]}"; do
        st=$(awk -v n="$n" '$1 == n { print $2; exit }' <<<"$states")
        [[ "$st" =~ $accept ]] || return 1
    done
}

# signal_and_wait PID...: SIGTERM them all, then wait once (bounded); SIGKILL whatever is left.
signal_and_wait() {
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT)) left pid
    while :; do
        left=()
        for pid in "$@"; do
            kill -0 "$pid" 2>/dev/null && left+=("$pid")
        done
        ((${#left[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            log "still alive after ${STOP_TIMEOUT}s, sending SIGKILL: ${left[*]}"
            kill -KILL "${left[@]}" 2>/dev/null || true
            return 0
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- setup steps

ensure_root() {
    ((EUID == 0)) || unavailable "must run as root (slurmd runs jobs as root here and munged needs /etc/munge)"
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
    done
}

ensure_packages() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        unavailable "needs a Debian-like system with apt-get (packages: ${PACKAGES[*]})"
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]} with apt-get"
    # Keep the packages' init scripts from starting daemons with the system-wide config.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
    fi
    local rc=0 apt_log="${TMPDIR:-/tmp}/local_cluster-apt.$$.log"
    export DEBIAN_FRONTEND=noninteractive
    {
        apt-get update -q &&
            apt-get install -y -q --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    } >"$apt_log" 2>&1 || rc=$?
    if ((made_policy)); then rm -f "$policy"; fi
    if ((rc != 0)) || [[ -n "$(missing_packages)" ]]; then
        tail -n 15 "$apt_log" >&2 || true
        rm -f "$apt_log"
        unavailable "could not install ${PACKAGES[*]} with apt-get (exit $rc)"
    fi
    rm -f "$apt_log"
}

ensure_hosts() {
    getent hosts node1 >/dev/null && getent hosts node2 >/dev/null && return 0
    if printf '127.0.0.1 node1 node2\n' >>/etc/hosts 2>/dev/null; then
        log "added '127.0.0.1 node1 node2' to /etc/hosts"
    else
        log "WARNING: cannot write /etc/hosts; node1/node2 will not resolve (MASTER_ADDR lookups fail)"
    fi
}

ensure_munge() {
    local key=/etc/munge/munge.key
    if [[ ! -s "$key" ]]; then
        log "creating a munge key"
        install -d -o munge -g munge -m 0700 /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey -c -k "$key"
        else
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
        chown munge:munge "$key"
        chmod 0400 "$key"
    fi
    if munge -n </dev/null >/dev/null 2>&1; then
        return 0 # some munged already answers: use it, and do not stop it later
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    rm -f /run/munge/munged.pid
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged 9>&- || die "munged did not start (see /var/log/munge/munged.log)"
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n </dev/null >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n </dev/null >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"
    # Remember that we started it: `stop` ends it only then.
    cp /run/munge/munged.pid "$RUN/munged.pid"
}

# gres_files: the File= value for 2 fake GPUs per node.
gres_files() {
    if [[ -c /dev/tty1 && -c /dev/tty2 ]]; then
        printf '/dev/tty[1-2]\n'
        return 0
    fi
    # No ttys: make harmless character devices (same numbers as /dev/null) in the state folder.
    install -d -m 0755 "$D/dev"
    local i
    for i in 1 2; do
        [[ -c "$D/dev/gpu$i" ]] || mknod -m 0666 "$D/dev/gpu$i" c 1 3 ||
            die "no /dev/tty1-2 and cannot mknod $D/dev/gpu$i for the fake GPUs"
    done
    printf '%s/dev/gpu[1-2]\n' "$D"
}

write_config() {
    [[ -r "$TEMPLATE" ]] || die "missing $TEMPLATE"
    install -d -m 0755 "$D" "$D/etc" "$D/state" "$RUN" "$LOG" "$D/spool"
    local n
    for n in "${NODES[@]}"; do install -d -m 0755 "$D/spool/$n"; done
    sed -e "s|@DIR@|$D|g" \
        -e "s|@CTLD_PORT@|$PORT_BASE|g" \
        -e "s|@SLURMD_PORT@|$((PORT_BASE + 1))|g" \
        -e "s|@NODE_PORTS@|$((PORT_BASE + 101))-$((PORT_BASE + 102))|g" \
        -e "s|@NODE_CPUS@|2|g" \
        -e "s|@NODE_MEM@|8000|g" \
        "$TEMPLATE" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    # A GPU GRES without File= drains the node. slurmd reads gres.conf beside slurm.conf.
    printf 'NodeName=node[1-2] Name=gpu File=%s\n' "$(gres_files)" >"$D/etc/gres.conf"
}

show_logs() {
    local f
    for f in "$LOG/slurmctld.log" "$LOG/slurmd-node1.log" "$LOG/slurmd-node2.log"; do
        printf '\n----- tail of %s -----\n' "$f" >&2
        tail -n 25 "$f" >&2 2>/dev/null || printf '(missing)\n' >&2
    done
    printf '\n----- sinfo -----\n' >&2
    timeout 15 sinfo -N -l >&2 2>&1 || true
}

# other_slurm_daemons: any slurmctld/slurmd/slurmdbd alive on this machine (read-only scan of /proc).
other_slurm_daemons() {
    local f
    for f in /proc/[0-9]*/comm; do
        case "$(cat "$f" 2>/dev/null)" in
            slurmctld | slurmd | slurmdbd) return 0 ;;
        esac
    done
    return 1
}

# stop_daemons [keep-munge]: SIGTERM the slurm daemons of this state folder (by pid file), then
# our munged unless told to keep it or other slurm daemons on this machine still use it.
stop_daemons() {
    local keep_munge=${1:-}
    local pids
    mapfile -t pids < <(our_slurm_pids)
    if ((${#pids[@]} > 0)); then
        log "stopping slurm daemons: ${pids[*]}"
        signal_and_wait "${pids[@]}"
    fi
    rm -f "$RUN/slurmctld.pid" "$RUN"/slurmd-*.pid
    local mpid
    [[ -z "$keep_munge" ]] || return 0
    if mpid=$(our_munged_pid); then
        if other_slurm_daemons; then
            log "leaving munged ($mpid) running: other slurm daemons on this machine still use it"
            return 0
        fi
        log "stopping munged ($mpid), which this script started"
        signal_and_wait "$mpid"
        rm -f "$RUN/munged.pid"
    fi
}

cancel_jobs() {
    timeout 15 squeue -h -o %i >/dev/null 2>&1 || return 0 # controller not answering
    timeout 15 scancel --full -u root >/dev/null 2>&1 || true
    local deadline=$((SECONDS + STOP_TIMEOUT)) jobs
    while :; do
        jobs=$(timeout 15 squeue -h -o %i 2>/dev/null) || return 0
        [[ -z "$jobs" ]] && return 0
        if ((SECONDS >= deadline)); then
            log "WARNING: queue not empty after ${STOP_TIMEOUT}s: ${jobs//$'\n'/ }"
            return 0
        fi
        # Jobs of other users, too.
        # shellcheck disable=SC2086
        timeout 15 scancel $jobs >/dev/null 2>&1 || true
        sleep 1
    done
}

# start_failed MESSAGE: show the daemon logs, stop what this start began, exit 1.
start_failed() {
    show_logs
    log "ERROR: $1 (log tails above; all logs in $LOG); stopping what was started"
    stop_daemons
    exit 1
}

# ---------------------------------------------------------------- commands

cmd_start() {
    check_settings
    ensure_root
    install -d -m 0755 "$D" "$RUN"
    exec 9>"$D/.lock"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT)) 9 || die "another local_cluster.sh holds $D/.lock"

    if [[ -e "$CONF" ]] && healthy; then
        log "already running and healthy ($CONF)"
        hint
        return 0
    fi
    ensure_packages
    if [[ -n "$(our_slurm_pids)" ]]; then
        log "daemons of $D are up but the cluster is not healthy: restarting them"
        cancel_jobs
        stop_daemons keep-munge
    fi

    local t0=$SECONDS
    ensure_hosts
    write_config
    ensure_munge

    # Node states come from slurm.conf on each start (a node drained in an earlier run would stay
    # drained); job state is kept, so job ids keep growing across restarts.
    rm -f "$D/state/node_state" "$D/state/node_state.old"
    slurmctld -f "$CONF" 9>&- || start_failed "slurmctld did not start"
    local n
    for n in "${NODES[@]}"; do
        slurmd -f "$CONF" -N "$n" 9>&- || start_failed "slurmd -N $n did not start"
    done

    local deadline=$((SECONDS + START_TIMEOUT))
    until healthy '^idle$'; do
        if ((SECONDS >= deadline)); then
            start_failed "nodes not idle after ${START_TIMEOUT}s"
        fi
        sleep 1
    done
    log "up: node1 node2 idle after $((SECONDS - t0))s"
    hint
}

cmd_stop() {
    check_settings
    ensure_root
    [[ -d "$D" ]] || { log "not running (no $D)"; return 0; }
    exec 9>"$D/.lock"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT)) 9 || die "another local_cluster.sh holds $D/.lock"
    if [[ -z "$(our_slurm_pids)" ]] && ! our_munged_pid >/dev/null; then
        log "not running"
        return 0
    fi
    if ctld_pid >/dev/null; then
        cancel_jobs
    fi
    stop_daemons
    log "stopped"
}

cmd_status() {
    check_settings
    if ! ctld_pid >/dev/null || ! timeout 15 sinfo >/dev/null 2>&1; then
        echo "not running ($D)"
        return 1
    fi
    hint
    timeout 15 sinfo -N -o '%N %T %C %G %E'
    timeout 15 squeue
}

main() {
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) check_settings; hint ;;
        *)
            printf 'usage: %s start|stop|status|env\n' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
