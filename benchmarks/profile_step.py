"""Where the time of one train step goes: an XLA profile of the real train step, summarised.

python benchmarks/profile_step.py [--config=configs/sorting.py] [--steps=10] [--trace_dir=DIR]
          [--config.model.d_model=256 --config.train.batch_size=128 ...]

Runs --steps steps of the data-parallel train step (after compiling) under `jax.profiler.trace`
and prints one JSON line: {"step_ms", "busy_ms_per_step", "ops": [{"kind", "ms_per_step",
"share", "calls_per_step"}, ...]}. Busy time is the sum over the XLA threads of the profiled
HLO operations (control flow excluded, since it contains the others); `kind` is the HLO operation name without its numeric suffix
(`dot`, `fusion`, `copy`, ...), so `share` says which kinds of kernels dominate. Keep the trace
with --trace_dir to open it in Perfetto or TensorBoard.
"""
import collections
import glob
import gzip
import json
import re
import tempfile
import time

from absl import flags
import jax
from ml_collections import config_flags
from train_step import train_setup  # this script's directory is on sys.path

from anira_jax import cli

TOP = 12


CONTROL_FLOW = ("while", "conditional", "call")  # contain other kernels: not counted


def summarise(trace: dict, steps: int) -> tuple[float, list[dict]]:
  """(busy ms per step, rows per operation kind, largest first) over the events named like HLO
  operations (`ynn_fusion.3`, `copy`, ...), control flow excluded."""
  time_us, calls = collections.Counter(), collections.Counter()
  for e in trace["traceEvents"]:
    match = re.fullmatch(r"([a-z][a-z_-]*?)(\.\d+)*", e.get("name", ""))
    if e.get("ph") == "X" and match and match.group(1) not in CONTROL_FLOW:
      time_us[match.group(1)] += e["dur"]
      calls[match.group(1)] += 1
  busy = sum(time_us.values())
  rows = [{"kind": k, "ms_per_step": round(t / 1e3 / steps, 3), "share": round(t / busy, 3),
           "calls_per_step": round(calls[k] / steps, 1)} for k, t in time_us.most_common(TOP)]
  return busy / 1e3 / steps, rows


def main(argv: list[str]) -> None:
  del argv
  cfg = _CONFIG.value
  parallel, state, batches = train_setup(cfg)
  for b in batches[:2]:  # compile and warm up
    state, out = parallel(state, b)
  jax.block_until_ready(out)
  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="anira_profile_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    for s in range(_STEPS.value):
      state, out = parallel(state, batches[s % len(batches)])
    jax.block_until_ready(out)
    step_ms = (time.perf_counter() - start) * 1e3 / _STEPS.value
  path = sorted(glob.glob(f"{trace_dir}/**/*perfetto_trace.json.gz", recursive=True))[-1]
  with gzip.open(path) as f:
    busy, rows = summarise(json.load(f), _STEPS.value)
  print(json.dumps({"d_model": cfg.model.d_model, "batch": cfg.train.batch_size,
                    "remat": cfg.model.remat, "step_ms": round(step_ms, 2),
                    "busy_ms_per_step": round(busy, 2), "ops": rows, "trace": path}))


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/sorting.py", "Config file.")
  _STEPS = flags.DEFINE_integer("steps", 10, "Profiled steps after compilation.")
  _TRACE_DIR = flags.DEFINE_string("trace_dir", "", "Keep the trace here (default: a temp dir).")
  cli.run(main, flags_parser=cli.config_parser(_CONFIG))
