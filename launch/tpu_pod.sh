#!/usr/bin/env bash
# Trains on a Cloud TPU pod slice: one process per TPU VM host, started on every worker at once by
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#     --command="python -m anira_jax.main ARGS..."
# with --config.parallel.distributed=auto, so jax.distributed.initialize() finds the slice's
# coordinator, process count and id itself. Each host feeds its slice of the global batch
# (train.batch_size must divide by the slice's chip count); process 0 writes logs and eval.json.
#
#   launch/tpu_pod.sh NAME ZONE ARGS...
#   launch/tpu_pod.sh my-v4-32 us-central2-b --config=configs/graph.py --workdir=/mnt/shared/graph
#
# Every worker needs this repository at REPO_DIR (default ~/anira_jax) installed with
# `pip install -e . "jax[tpu]"`; run `launch/tpu_pod.sh NAME ZONE --setup` once to clone it there
# (from REPO_URL) and install. All hosts write checkpoint shards, so --workdir must be a directory
# every worker sees (an NFS or Filestore mount). Environment: PROJECT (gcloud --project), PYTHON
# (default python3), REPO_DIR, REPO_URL. DRY_RUN=1 prints the gcloud command instead of running it.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NAME ZONE (--setup | ARGS...), e.g. $0 my-v4-32 us-central2-b" \
    "--config=configs/sorting.py" >&2
  exit 2
fi
name=$1
zone=$2
shift 2
repo_dir=${REPO_DIR:-'~/anira_jax'}
python=${PYTHON:-python3}
if [[ "$1" == "--setup" ]]; then
  : "${REPO_URL:?set REPO_URL to the git URL of this repository}"
  remote="(test -d ${repo_dir} || git clone $(printf '%q' "${REPO_URL}") ${repo_dir})"
  remote+=" && cd ${repo_dir} && ${python} -m pip install -e . 'jax[tpu]'"
else
  remote="cd ${repo_dir} && ${python} -m anira_jax.main $(printf '%q ' "$@")"
  remote+="--config.parallel.distributed=auto"
fi
cmd=(gcloud compute tpus tpu-vm ssh "${name}" "--zone=${zone}" --worker=all "--command=${remote}")
if [[ -n "${PROJECT:-}" ]]; then
  cmd+=("--project=${PROJECT}")
fi
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${cmd[@]}"
  echo
else
  "${cmd[@]}"
fi
