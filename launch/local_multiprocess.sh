#!/usr/bin/env bash
# Starts N CPU processes on this machine, coordinated by jax.distributed, each running
#   python -m anira_jax.main ARGS... --config.parallel.distributed=explicit ...
# Each process has DEVICES_PER_PROCESS CPU devices (default 1) and feeds its slice of the global
# batch; process 0 writes logs, eval.json and checkpoints. For tests and debugging. SIGINT or
# SIGTERM to this script reaches every process, which agree on a step, save it and exit 75; the
# script exits with the last non-zero status of a process. PYTHON picks the interpreter (default:
# python on PATH); PORT the coordinator port (default: random).
#   launch/local_multiprocess.sh 2 --config=configs/sorting.py --workdir=/tmp/mp
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N ARGS... (N = number of processes)" >&2
  exit 2
fi
n=$1
shift
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
interrupted=0
trap 'interrupted=1; kill -TERM "${pids[@]}" 2>/dev/null' INT TERM   # each saves, exits 75
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}" JAX_PLATFORMS=cpu \
    "${PYTHON:-python}" -m anira_jax.main "$@" --config.parallel.distributed=explicit \
    --config.parallel.coordinator_address="localhost:${port}" \
    --config.parallel.num_processes="${n}" --config.parallel.process_id="${i}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  while :; do
    interrupted=0
    code=0
    wait "${pid}" || code=$?
    (( interrupted && code > 128 )) || break   # else the trap cut the wait short: wait again
  done
  (( code == 0 )) || status=${code}
done
exit "${status}"
