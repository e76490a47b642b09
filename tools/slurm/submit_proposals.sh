#!/bin/bash
# Submit proposal generation in SHARDS array tasks and the merge that waits for all of them:
#   tools/slurm/submit_proposals.sh 64 --image-root /shared/imagenet/train --output /shared/proposals/in1k.pkl
# Extra sbatch options for both jobs (partition, account, CPUs) go in SBATCH_ARGS, e.g.
#   SBATCH_ARGS="--partition=cpu --cpus-per-task=16" tools/slurm/submit_proposals.sh 64 ...
set -eu
if [ $# -lt 3 ]; then
    echo "usage: $0 SHARDS --image-root DIR --output FILE.pkl [gen_proposals.py options]" >&2
    exit 2
fi
shards=$1
shift
output=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[$i]}" = "--output" ] && output=${args[$((i + 1))]}
done
if [ -z "${output}" ]; then
    echo "$0: --output FILE.pkl is required" >&2
    exit 2
fi
here=$(dirname "$0")
extra=(${SBATCH_ARGS:-})
array=$(sbatch --parsable "${extra[@]}" --array="0-$((shards - 1))" "${here}/gen_proposals.sbatch" "$@")
merge=$(sbatch --parsable "${extra[@]}" --dependency="afterok:${array}" "${here}/merge_proposals.sbatch" --output "${output}")
echo "proposals: array job ${array} (${shards} shards), merge job ${merge}"
