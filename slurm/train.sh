#!/bin/bash
# JRNet training on Slurm: one task per GPU, requeued on the time-limit warning, resumed from the latest
# complete checkpoint.
#
#   sbatch slurm/train.sh [section.key=value ...]
#   CONFIG=configs/paper_576.yaml SHARDS=/data/shards OUTPUT=runs/p576 \
#       sbatch --nodes=4 --time=48:00:00 --partition=gpu slurm/train.sh train.lr=2e-4
#
# Every #SBATCH line below is a default: an `sbatch` option of the same name wins. Keep
# --ntasks-per-node equal to --gpus-per-node (one rank per GPU); on CPU-only nodes pass --gpus-per-node=0.
#
# Environment (read at submission, sbatch exports it to the job):
#   CONFIG    YAML file or a name in configs/            (default configs/paper_448.yaml)
#   SHARDS    folder written by pipeline/shard.py, or its http(s):// prefix or pipe: command (default shards)
#   OUTPUT    run folder: checkpoints/, metrics.jsonl      (default runs/$SLURM_JOB_NAME; keep it the same
#             across resubmissions: a new job with the same OUTPUT also resumes from its latest checkpoint)
#   REPO      repository root holding launch.py           (default: the folder sbatch was run from)
#   PYTHON    interpreter                                  (default python; e.g. /path/to/.venv/bin/python)
#   MASTER_ADDR / MASTER_PORT   rendezvous (default: first node of the job / 20000 + job id % 20000)
#   MAX_RESTARTS  stop requeueing after this many restarts (default 20, as jrnet-submit's --max-requeues)
#
# This script is the thin requeue path: `scontrol requeue` on exit 75. jrnet/submit.py is the other one, for
# submitit (its requeue goes through submitit's checkpoint hook). The stop itself is jrnet/preemption.py's.
#
# Time limit: Slurm sends SIGUSR1 to every task 300 s before the end (--signal=USR1@300). No `B:`: the
# signal must reach the training processes, and with `B:` only this shell would get it (bash runs a trap
# only after the foreground srun returns, so it would need `srun &`, `wait` and forwarding). Every rank
# finishes its step, all ranks save that step together and launch.py exits 75; this script then runs
# `scontrol requeue`, and the requeued job (same id, same log thanks to --open-mode=append) resumes with
# `--resume auto` at that step. launch.py treats USR1, USR2 and TERM alike: pass --signal=USR2@300 if
# something in your stack takes USR1 (NCCL 2.12 did). A preemption, scancel or an outside `scontrol
# requeue` sends SIGTERM: the same checkpoint is attempted within the cluster's KillWait, and the restarted
# job resumes from the latest complete checkpoint either way.
#
# Exit codes: 0 finished; 2 bad input (not requeued); 75 checkpointed but not requeued (MAX_RESTARTS
# reached, or `scontrol requeue` failed); anything else: a rank failed (srun --kill-on-bad-exit=1 ended
# the others).
#
#SBATCH --job-name=jrnet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

set -uo pipefail

readonly EXIT_REQUEUE=75
readonly EXIT_BAD_INPUT=2

log() { printf '[train.sh %(%F %T)T] %s\n' -1 "$*"; }

if [[ -z "${SLURM_JOB_ID:-}" ]]; then
    echo "usage: sbatch [sbatch options] $0 [section.key=value ...]  (this is a Slurm batch script)" >&2
    exit "$EXIT_BAD_INPUT"
fi

REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
CONFIG=${CONFIG:-configs/paper_448.yaml}
SHARDS=${SHARDS:-shards}
OUTPUT=${OUTPUT:-runs/${SLURM_JOB_NAME:-jrnet}}
PYTHON=${PYTHON:-python}
MAX_RESTARTS=${MAX_RESTARTS:-20}
RESTARTS=${SLURM_RESTART_COUNT:-0}

cd "$REPO" || { echo "error: REPO=$REPO: no such folder" >&2; exit "$EXIT_BAD_INPUT"; }
[[ -f launch.py ]] || { echo "error: no launch.py in $REPO (set REPO)" >&2; exit "$EXIT_BAD_INPUT"; }

# Rendezvous: rank 0 runs on the first node of the allocation; one port per job id, so two jobs sharing a
# node do not collide (launch.py derives the same values when they are unset).
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export MASTER_ADDR MASTER_PORT
# srun does not inherit --cpus-per-task from sbatch since Slurm 22.05: pass it on explicitly.
CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK}
export PYTHONUNBUFFERED=1

log "job $SLURM_JOB_ID ($SLURM_JOB_NAME) restart $RESTARTS | nodes $SLURM_JOB_NODELIST | ${SLURM_NTASKS:-?} tasks" \
    "| master $MASTER_ADDR:$MASTER_PORT"
log "config $CONFIG | shards $SHARDS | output $OUTPUT | overrides: ${*:-(none)}"

# What each task runs: print where it is, then run the training and report its exit code.
# Slurm signals every process of the step (this shell too), so the shell keeps itself alive with a no-op
# trap (children get the default handlers back) and the training handles the signal. A task that
# checkpointed on a signal (launch.py exit 75) exits 0 here: with --kill-on-bad-exit=1 its exit 75 would
# kill the ranks still shutting down and srun would report their SIGTERM instead. Rank 0 leaves STOP_FLAG
# for this script to tell "checkpointed, requeue" from "finished".
# shellcheck disable=SC2016  # expanded by each task's own shell
TASK='trap : USR1 USR2 TERM
echo "[task $SLURM_PROCID/$SLURM_NTASKS] node ${SLURMD_NODENAME:-$(hostname)} local rank $SLURM_LOCALID" \
    "| host $(hostname) | gpus ${CUDA_VISIBLE_DEVICES:-none} | cpus ${SLURM_CPUS_PER_TASK:-?}" \
    "| master $MASTER_ADDR:$MASTER_PORT"
"$@"
rc=$?
if [ "$rc" -ne 0 ]; then echo "[task $SLURM_PROCID/$SLURM_NTASKS] training exited $rc"; fi
if [ "$rc" -eq 75 ]; then
    if [ "$SLURM_PROCID" -eq 0 ]; then touch "$STOP_FLAG"; fi
    exit 0
fi
exit "$rc"'

mkdir -p "$OUTPUT" || { echo "error: cannot create OUTPUT=$OUTPUT" >&2; exit "$EXIT_BAD_INPUT"; }
STOP_FLAG=$(cd "$OUTPUT" && pwd)/.slurm-stopped-$SLURM_JOB_ID
export STOP_FLAG
rm -f "$STOP_FLAG"

srun --kill-on-bad-exit=1 --cpus-per-task="$CPUS_PER_TASK" \
    bash -c "$TASK" task \
    "$PYTHON" launch.py --config "$CONFIG" --shards "$SHARDS" --output "$OUTPUT" --resume auto "$@"
rc=$?
if ((rc == 0)) && [[ -e "$STOP_FLAG" ]]; then
    rm -f "$STOP_FLAG"
    rc=$EXIT_REQUEUE
fi

case $rc in
    0)
        log "finished: $OUTPUT/eval.json"
        exit 0
        ;;
    "$EXIT_REQUEUE")
        if ((RESTARTS >= MAX_RESTARTS)); then
            log "checkpointed, but not requeued: $RESTARTS restarts reached MAX_RESTARTS=$MAX_RESTARTS"
            exit "$EXIT_REQUEUE"
        fi
        log "checkpointed on a signal: requeueing job $SLURM_JOB_ID (restart $((RESTARTS + 1)))"
        if scontrol requeue "$SLURM_JOB_ID"; then
            exit 0 # Slurm ends this run here; the requeued job resumes from the checkpoint
        fi
        log "scontrol requeue failed: resubmit with the same OUTPUT to resume"
        exit "$EXIT_REQUEUE"
        ;;
    "$EXIT_BAD_INPUT")
        log "bad input (exit 2): not requeued"
        exit "$EXIT_BAD_INPUT"
        ;;
    *)
        log "srun exited $rc: a rank failed"
        exit "$rc"
        ;;
esac
