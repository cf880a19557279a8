"""Inference time saved by halting: K_max dense iterations vs while_loop early exit vs compaction.

python benchmarks/early_exit.py --json [--workdir=DIR] [--config=configs/sorting.py]
          [--train_steps=300] [--batches=1,64] [--size=8] [--inputs=8] [--rounds=15]

Loads the run in --workdir; when it holds none, first trains --config (default anira_o on sorting)
for --train_steps steps there (default: a temporary directory). Then, in this process, times the
jitted predictors of runs.py on --inputs fixed batches of --size (default: the largest training
size; no padding) at each batch size: "scan" (K_max iterations on every token: the dense
baseline), "while" (stops once every token has halted) and "compact" (also runs the block only on
tokens that need it). After one warm-up pass, each of --rounds rounds times one pass over the
inputs per mode, modes interleaved; the median pass is the mode's time.

Prints one JSON line {"results": [{"batch", "mode", "compaction", "ideal_speedup" (K_max / mean
block applications per token), "realized_speedup" (time of scan / time of the mode),
"realized_over_ideal", "realized_speedup_cpu" (the same from process CPU time, steadier on a
shared machine), "mean_depth", "mean_iterations" (loop trips per call), "call_s" (median pass /
inputs), "dense_call_s", "compile_s", "k_max", "seq_len", "d_model"}, ...]}.
"""
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from anira_jax import cli, model, runs, train

MODES = ("scan", "while", "compact")


def load_or_train(workdir: str, cfg, steps: int) -> runs.Run:
  """The run in workdir, trained there first (logs on stderr) when it holds none."""
  if not os.path.isfile(os.path.join(workdir, "config.json")):
    cfg.train.steps = steps
    with contextlib.redirect_stdout(sys.stderr):
      train.train_and_evaluate(cfg, workdir)
  return runs.load_run(workdir)


def pass_seconds(call, inputs: list) -> tuple[float, float]:
  """Wall-clock and process CPU seconds of one pass of `call` over the inputs."""
  wall, cpu = time.perf_counter(), time.process_time()
  for x in inputs:
    jax.block_until_ready(call(x))
  return time.perf_counter() - wall, time.process_time() - cpu


def define_flags(batches: list[str], inputs: int, rounds: int) -> None:
  """The flags of the inference benchmarks (read back through absl's flags.FLAGS)."""
  config_flags.DEFINE_config_file("config", "configs/sorting.py",
                                  "Config trained when --workdir holds no run.")
  flags.DEFINE_string("workdir", None, "Run to load, or to train into when empty.")
  flags.DEFINE_integer("train_steps", 300, "Training steps when training first.")
  flags.DEFINE_list("batches", batches, "Batch sizes to time.")
  flags.DEFINE_integer("size", 0, "Task size of the inputs; 0: the largest training size.")
  flags.DEFINE_integer("inputs", inputs, "Distinct input batches per batch size.")
  flags.DEFINE_integer("rounds", rounds, "Timed passes over the inputs per mode.")
  flags.DEFINE_bool("json", False, "Print only the JSON line.")


def time_modes(run: runs.Run, batch: int, size: int, num_inputs: int, rounds: int) -> list[dict]:
  """One row per early-exit mode at this batch size, against the dense scan."""
  cfg = run.config
  params = jax.device_put(run.params)
  inputs = [jax.device_put(run.task.sample(seed=10_000 + i, size=size, batch=batch)["inputs"])
            for i in range(num_inputs)]
  predictors = {mode: runs.predictor(cfg, mode) for mode in MODES}
  compile_s, outputs = {}, {}
  for mode, predict in predictors.items():
    start = time.perf_counter()
    outputs[mode] = [jax.tree.map(np.asarray, predict(params, x)) for x in inputs]  # warm-up
    compile_s[mode] = time.perf_counter() - start
  passes = {mode: [] for mode in MODES}
  for _ in range(rounds):
    for mode, predict in predictors.items():
      passes[mode].append(pass_seconds(functools.partial(predict, params), inputs))
  seconds = {mode: statistics.median(wall for wall, _ in p) for mode, p in passes.items()}
  cpu = {mode: statistics.median(c for _, c in p) for mode, p in passes.items()}
  depth = np.stack([o["depth"] for o in outputs["while"]])
  assert all((o["depth"] == d).all() for o, d in zip(outputs["compact"], depth)), "depths differ"
  ideal = cfg.model.k_max / depth[depth > 0].mean()
  rows = []
  for mode in ("while", "compact"):
    realized = seconds["scan"] / seconds[mode]
    rows.append({
        "batch": batch, "mode": mode, "compaction": mode == "compact",
        "ideal_speedup": round(float(ideal), 3), "realized_speedup": round(realized, 3),
        "realized_over_ideal": round(float(realized / ideal), 3),
        "realized_speedup_cpu": round(cpu["scan"] / cpu[mode], 3),
        "mean_depth": round(float(depth[depth > 0].mean()), 3),
        "mean_iterations": float(np.mean([int(o["iterations"]) for o in outputs[mode]])),
        "call_s": round(seconds[mode] / num_inputs, 6),
        "dense_call_s": round(seconds["scan"] / num_inputs, 6),
        "compile_s": round(compile_s[mode], 2), "k_max": cfg.model.k_max,
        "seq_len": inputs[0].shape[1], "d_model": cfg.model.d_model})
  return rows


def benchmark(time_rows: Callable[[runs.Run, int, int, int, int], list[dict]],
              describe: Callable[[dict], str], looped: Callable[[model.Variant], bool]) -> None:
  """Loads or trains the run of the flags, then prints `time_rows(run, batch, size, inputs,
  rounds)` for every --batches as one JSON line (and `describe(row)` on stderr unless --json);
  refuses variants for which `looped` is false."""
  FLAGS = flags.FLAGS
  with tempfile.TemporaryDirectory() as tmp:
    run = load_or_train(FLAGS.workdir or tmp, FLAGS.config, FLAGS.train_steps)
  if not looped(model.variant(run.config.model)):
    cli.fail(f"variant {run.config.model.variant} never exits early; benchmark anira_o or anira_e")
  size = FLAGS.size or run.config.task.train_sizes[1]
  results = []
  for batch in (int(b) for b in FLAGS.batches):
    for row in time_rows(run, batch, size, FLAGS.inputs, FLAGS.rounds):
      results.append(row)
      if not FLAGS.json:
        print(describe(row), file=sys.stderr)
  print(json.dumps({"results": results}))


def main(argv: list[str]) -> None:
  del argv
  benchmark(time_modes, lambda r: (
      f"batch {r['batch']:>3} {r['mode']:<8} ideal {r['ideal_speedup']:.2f}x  realized "
      f"{r['realized_speedup']:.2f}x ({r['realized_over_ideal']:.2f} of ideal)  "
      f"{r['call_s'] * 1e3:.2f} ms vs dense {r['dense_call_s'] * 1e3:.2f} ms"),
      lambda v: not v.stacked)


if __name__ == "__main__":
  define_flags(batches=["1", "64"], inputs=8, rounds=15)
  cli.run(main, flags_parser=cli.config_parser(flags.FLAGS["config"]))
