# Signal routing for the sbatch files of tools/slurm (sourced, not run).
#
# What Slurm sends (measured with slurm-wlm 22.05): a time limit sends SIGTERM to the tasks, the
# batch shell and srun, and SIGKILL KillWait seconds later; `scancel --signal=SIG JOB` reaches
# only the tasks; `--signal=B:USR1@N` reaches only this batch shell, N seconds before the limit.
# A bash script does not run its traps while a foreground command runs, so the job step runs in
# the background and this shell waits for it:
#   - SIGUSR1 (the pre-emption notice): passed to the tasks as STEP_SIGNAL (default SIGUSR1; use
#     TERM for torchrun, whose agent passes SIGTERM on to its workers); every rank saves a
#     checkpoint at one iteration and stops; then, unless REQUEUE=0, the job is requeued and
#     continues from that checkpoint (the tools run with --resume).
#   - SIGTERM (time limit, scancel): the tasks got it themselves; this shell only keeps waiting.
# run_step exits with the step's exit code (143 SIGTERM, 138 SIGUSR1, 130 SIGINT). Do not give the
# step --kill-on-bad-exit: a rank that stopped gracefully exits 138/143, and srun would then
# SIGTERM the others while they shut down. Slurm makes a requeued job eligible about two
# minutes after the requeue (slurm-wlm 22.05).

STEP_SIGNAL=${STEP_SIGNAL:-USR1}
REQUEUE=${REQUEUE:-1}
_preempted=0

_on_usr1() {
    _preempted=1
    echo "$(date '+%F %T') batch shell: pre-emption notice; sending SIG${STEP_SIGNAL} to the tasks of job ${SLURM_JOB_ID}"
    scancel --signal="${STEP_SIGNAL}" "${SLURM_JOB_ID}"
}

run_step() {
    trap _on_usr1 USR1
    trap 'echo "$(date "+%F %T") batch shell: SIGTERM (time limit or scancel); waiting for the tasks to save"' TERM
    "$@" &
    local pid=$! rc
    while :; do
        wait "${pid}"
        rc=$?
        kill -0 "${pid}" 2>/dev/null || break  # else a trap interrupted the wait
    done
    echo "$(date '+%F %T') batch shell: the step ended with exit code ${rc}"
    if [ "${_preempted}" = 1 ] && [ "${REQUEUE}" = 1 ]; then
        echo "$(date '+%F %T') batch shell: requeueing job ${SLURM_JOB_ID}; it resumes from the last checkpoint"
        scontrol requeue "${SLURM_JOB_ID}"
    fi
    exit "${rc}"
}
