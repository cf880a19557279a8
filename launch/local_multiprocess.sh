#!/usr/bin/env bash
# Starts N CPU processes on this machine, coordinated by jax.distributed, each running
#   python -m anira_jax.main ARGS... --config.parallel.distributed=explicit ...
# Each process has DEVICES_PER_PROCESS CPU devices (default 1) and feeds its slice of the global
# batch; process 0 writes logs, eval.json and checkpoints. For tests and debugging. PYTHON picks
# the interpreter (default: python on PATH); PORT the coordinator port (default: random).
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
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1}" JAX_PLATFORMS=cpu \
    "${PYTHON:-python}" -m anira_jax.main "$@" --config.parallel.distributed=explicit \
    --config.parallel.coordinator_address="localhost:${port}" \
    --config.parallel.num_processes="${n}" --config.parallel.process_id="${i}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "${pid}" || status=$?
done
exit "${status}"
