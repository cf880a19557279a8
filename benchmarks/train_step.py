"""Train-step throughput, compile time and peak memory for a config and its variants.

python benchmarks/train_step.py --json [--config=configs/sorting.py] [--variants=anira_o,fixed]
          [--steps=100] [--config.model.d_model=128 ...]

Prints one JSON line: {"results": [{"variant", "d_model", "batch", "seq_len", "compile_s",
"step_s" (median), "tokens_per_s", "peak_rss_mb"}, ...]}. Each variant runs in its own process so
peak memory is its own.
"""
import json
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags
import jax
from ml_collections import config_flags

from anira_jax import cli, config as config_lib, data, optimizer, train
from anira_jax.parallel import DataParallel

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sorting.py", "Config file.")
_VARIANTS = flags.DEFINE_list("variants", ["anira_o", "anira_e", "fixed", "transformer"],
                              "Variants to time, each in its own process.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed steps after compilation.")
_JSON = flags.DEFINE_bool("json", False, "Print only the JSON line.")
_CHILD = flags.DEFINE_bool("child", False, "Internal: time one variant in this process.")


def time_variant(cfg, steps: int) -> dict:
  """Compile time and median step time of the real data-parallel train step."""
  task = config_lib.validate(cfg)
  opt = optimizer.make(cfg.train)
  parallel = DataParallel(cfg.parallel.mode, lambda st, b: train.train_step(cfg, opt, st, b))
  state = parallel.put_state(optimizer.init_state(cfg, task))
  batches = [parallel.put_batch(data.train_batch(cfg, task, s)) for s in range(8)]
  start = time.perf_counter()
  state, out = parallel(state, batches[0])
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - start
  times = []
  for s in range(steps):
    start = time.perf_counter()
    state, out = parallel(state, batches[s % len(batches)])
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  B, L = batches[0]["inputs"].shape
  return {"variant": cfg.model.variant, "d_model": cfg.model.d_model, "batch": B, "seq_len": L,
          "k_max": cfg.model.k_max, "compile_s": round(compile_s, 3), "step_s": round(step_s, 5),
          "tokens_per_s": round(B * L / step_s, 1),
          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str]) -> None:
  del argv
  if _CHILD.value:
    print(json.dumps(time_variant(_CONFIG.value, _STEPS.value)))
    return
  results = []
  passthrough = [a for a in sys.argv[1:] if not a.startswith(("--variants", "--json"))]
  for variant in _VARIANTS.value:
    cmd = [sys.executable, __file__, "--child", *passthrough, f"--config.model.variant={variant}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
      cli.fail(f"variant {variant} failed: {cli.one_line(Exception(proc.stderr))}")
    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if not _JSON.value:
      print(results[-1], file=sys.stderr)
  print(json.dumps({"results": results}))


if __name__ == "__main__":
  cli.run(main, flags_parser=cli.config_parser(_CONFIG))
