"""Input pipeline: how fast batches are made, and what the training loop costs over its step.

python benchmarks/input_pipeline.py --json [--batches=64,1024] [--seconds=1.0]
          [--loop_steps=300] [--loop_workers=0,1,2] [--step_steps=100] [--rounds=2]

Prints one JSON line:
- "results": [{"task", "batch", "examples_per_s"}]: `data.train_batch` in this process, one call
  after another over successive steps, for every task family at its config's training sizes
  (configs/<family>.py) and each of --batches; each timed for at least --seconds after one call.
- "workers": [{"task", "batch", "kind", "workers", "examples_per_s"}]: the same for sorting and
  graph at the largest batch, made ahead by `pipeline.Batches` worker processes ("process") and,
  for comparison, by a pool of threads ("thread"), 1 and 2 of each, 4 batches asked ahead;
  median over --rounds rounds, the settings interleaved in each.
- "loop_over_step": the default sorting config's real training loop (`train.train_and_evaluate`,
  data, step and logging included, batches made in the loop as by default) median time per step,
  from the "steps_per_sec" of its metrics.jsonl (logged every 10 steps, the first interval, with
  compilation, left out), divided by the median time of the bare jitted train step on a batch
  already on the devices (benchmarks/train_step.py's timing, --step_steps steps, each waited
  for). Loop runs and bare-step timings alternate over --rounds rounds (medians of the rounds),
  so that a change in the machine's load moves both.
- "loop_s", "step_s": those two medians; "loop_over_step_by_workers": the ratio with
  train.data_workers = each of --loop_workers; "load_average", "cpus": of the machine.
With --rounds=0 only "results", "load_average" and "cpus" are measured and printed.
"""
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent import futures

from absl import flags

from anira_jax import cli, config as config_lib, data, pipeline, tasks, train

try:
  from benchmarks import train_step as step_bench  # pylint: disable=ungrouped-imports
except ImportError:
  import train_step as step_bench  # run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_EVERY = 10


def family_config(name: str, **train_fields):
  spec = importlib.util.spec_from_file_location(f"_{name}_config",
                                                os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  for key, value in train_fields.items():
    cfg.train[key] = value
  return cfg


def examples_per_s(make, batch: int, seconds: float) -> float:
  """Examples per second of make(step) over successive steps, after one untimed call."""
  make(0)
  step, start = 1, time.perf_counter()
  while (elapsed := time.perf_counter() - start) < seconds or step < 4:
    make(step)
    step += 1
  return (step - 1) * batch / elapsed


def generation(batches: list[int], seconds: float) -> list[dict]:
  rows = []
  for name in tasks.names():
    for batch in batches:
      cfg = family_config(name, batch_size=batch)
      task = config_lib.validate(cfg)
      rate = examples_per_s(lambda s, cfg=cfg, task=task: data.train_batch(cfg, task, s), batch,
                            seconds)
      rows.append({"task": name, "batch": batch, "examples_per_s": round(rate, 1)})
  return rows


def made_ahead(name: str, batch: int, kind: str, workers: int, seconds: float) -> float:
  cfg = family_config(name, batch_size=batch)
  task = config_lib.validate(cfg)
  if kind == "process":
    with pipeline.Batches(cfg, task, 0, slice(None), workers, prefetch=4) as stream:
      return examples_per_s(lambda _: next(stream), batch, seconds)
  with futures.ThreadPoolExecutor(workers) as pool:
    ahead = {}

    def make(step):
      for s in range(step, step + 4):
        if s not in ahead:
          ahead[s] = pool.submit(pipeline.local_batch, cfg, task, s, slice(None))
      return ahead.pop(step).result()
    return examples_per_s(make, batch, seconds)


def loop_step_s(workers: int, steps: int) -> float:
  """Median seconds per step of the real training loop on the default sorting config."""
  cfg = family_config("sorting", steps=steps, log_every=LOG_EVERY, eval_every=10**9,
                      checkpoint_every=10**9, data_workers=workers)
  cfg.eval.examples = 8
  with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(sys.stderr):
    train.train_and_evaluate(cfg, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rates = [json.loads(line)["steps_per_sec"] for line in f][1:]
  return statistics.median(1.0 / r for r in rates)


def main(argv: list[str]) -> None:
  del argv
  batches = [int(b) for b in _BATCHES.value]
  results = generation(batches, _SECONDS.value)
  settings = [(name, kind, n) for name in ("sorting", "graph") for kind in ("thread", "process")
              for n in (1, 2)]
  rates, loop, steps = {}, {}, []
  for _ in range(_ROUNDS.value):
    for setting in settings:
      rates.setdefault(setting, []).append(made_ahead(setting[0], max(batches), *setting[1:],
                                                      _SECONDS.value))
    for n in map(int, _LOOP_WORKERS.value):
      loop.setdefault(n, []).append(loop_step_s(n, _LOOP_STEPS.value))
    steps.append(step_bench.time_variant(family_config("sorting"), _STEP_STEPS.value)["step_s"])
  out = {"results": results}
  if _ROUNDS.value:
    loop = {n: statistics.median(s) for n, s in loop.items()}
    step_s = statistics.median(steps)
    default = loop.get(0, next(iter(loop.values())))
    out.update({
        "workers": [{"task": name, "batch": max(batches), "kind": kind, "workers": n,
                     "examples_per_s": round(statistics.median(rates[(name, kind, n)]), 1)}
                    for name, kind, n in settings],
        "loop_over_step": round(default / step_s, 3), "loop_s": round(default, 5),
        "step_s": round(step_s, 5),
        "loop_over_step_by_workers": {str(n): round(s / step_s, 3) for n, s in loop.items()}})
  out.update({"load_average": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()})
  if not _JSON.value:
    for r in results:
      print(f"{r['task']:>9} batch {r['batch']:>5}: {r['examples_per_s']:>9.0f} examples/s",
            file=sys.stderr)
  print(json.dumps(out))


if __name__ == "__main__":
  _JSON = flags.DEFINE_bool("json", False, "Print only the JSON line.")
  _BATCHES = flags.DEFINE_list("batches", ["64", "1024"], "Global batch sizes.")
  _SECONDS = flags.DEFINE_float("seconds", 1.0, "Least time per generation measurement.")
  _LOOP_STEPS = flags.DEFINE_integer("loop_steps", 300, "Steps of each training loop run.")
  _LOOP_WORKERS = flags.DEFINE_list("loop_workers", ["0", "1", "2"],
                                    "train.data_workers of the loop runs (0 first: the default).")
  _STEP_STEPS = flags.DEFINE_integer("step_steps", 100, "Timed bare train steps.")
  _ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of the loop, bare-step and worker timings "
                                 "(0: generation only).")
  cli.run(main)
