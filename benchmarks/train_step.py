"""Train-step throughput, compile time and peak memory for a config and its variants.

python benchmarks/train_step.py --json [--config=configs/sorting.py] [--variants=anira_o,fixed]
          [--steps=100] [--config.model.d_model=128 ...] [--config.model.dtype=bfloat16]

Prints one JSON line: {"results": [{"variant", "d_model", "dtype", "batch", "seq_len", "compile_s",
"step_s" (median), "tokens_per_s", "peak_rss_mb"}, ...]}. Each variant runs in its own process so
peak memory is its own.

python benchmarks/train_step.py --compare-torch --json [--compare_sizes=64:64,128:64,256:128]
          [--steps=100] [--rounds=2] [--torch_threads=0] [--config=...]

compares the config's variant (default anira_o) with its PyTorch-eager twin
(benchmarks/torch_twin.py; needs `pip install -e ".[bench]"`) at each d_model:batch of
--compare_sizes, one process per size. In each process the twin first loads the JAX parameters
and must give the same logits (within 1e-4) and exactly the same per-token depths on a batch
("faithful"). Then, for the train step (value_and_grad + clipping + AdamW, the real data-parallel
step of anira_jax vs loss.backward() + clip_grad_norm_ + AdamW) and for inference (the jitted
while_loop predictor vs the twin's forward under inference_mode, which stops once every token
has halted), it alternates the two frameworks over --rounds rounds of --steps/--rounds timed
steps each, after warm-up, and reports medians. torch runs on torch.set_num_threads(N) threads,
N = os.cpu_count() unless --torch_threads is given (on a machine shared with other jobs, OpenMP
threads spin-waiting for a busy core can make torch several times slower with 2 threads than
with 1). The twin is float32: model.dtype must be too. Prints one JSON line: {"results": [{"d_model", "batch", "phase": "train"|"infer",
"jax_s", "torch_s", "speed_ratio" (torch_s / jax_s), "jax_compile_s", "faithful", ...}, ...]}.
Without torch it prints how to install it and exits 0.
"""
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from anira_jax import cli, config as config_lib, data, optimizer, runs, train
from anira_jax.parallel import DataParallel

INSTALL_TORCH = ('--compare-torch needs PyTorch, which is not installed: pip install -e ".[bench]" '
                 '(the CPU build torch==2.13.0)')
WARMUP_STEPS = 5


def train_setup(cfg) -> tuple[DataParallel, dict, list[dict]]:
  """The real data-parallel train step, its initial state and 8 batches, on the devices."""
  task = config_lib.validate(cfg)
  opt = optimizer.make(cfg)
  parallel = DataParallel(cfg.parallel.mode, lambda st, b: train.train_step(cfg, opt, st, b))
  state = parallel.put_state(optimizer.init_state(cfg, task))
  batches = [parallel.put_batch(data.train_batch(cfg, task, s)) for s in range(8)]
  return parallel, state, batches


def time_variant(cfg, steps: int) -> dict:
  """Compile time and median step time of the real data-parallel train step."""
  parallel, state, batches = train_setup(cfg)
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
  return {"variant": cfg.model.variant, "d_model": cfg.model.d_model, "dtype": cfg.model.dtype,
          "batch": B, "seq_len": L, "k_max": cfg.model.k_max, "compile_s": round(compile_s, 3),
          "step_s": round(step_s, 5),
          "tokens_per_s": round(B * L / step_s, 1),
          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _alternate(jax_fn, torch_fn, steps: int, rounds: int) -> tuple[float, float]:
  """Median seconds of jax_fn and torch_fn, run in alternating blocks: `rounds` rounds of
  ceil(steps / rounds) calls each, after WARMUP_STEPS untimed calls of each."""
  for _ in range(WARMUP_STEPS):
    jax_fn()
    torch_fn()
  per_round = math.ceil(steps / rounds)
  jax_times, torch_times = [], []
  for _ in range(rounds):
    jax_times += [_timed(jax_fn) for _ in range(per_round)]
    torch_times += [_timed(torch_fn) for _ in range(per_round)]
  return statistics.median(jax_times), statistics.median(torch_times)


def compare_torch(cfg, steps: int, rounds: int, threads: int = 0) -> list[dict]:
  """Train and inference rows of one config: JAX vs the PyTorch twin, after a parity check."""
  import torch  # pylint: disable=import-outside-toplevel
  try:
    from benchmarks import torch_twin  # pylint: disable=import-outside-toplevel
  except ImportError:
    import torch_twin  # pylint: disable=import-outside-toplevel  (run as a script)
  threads = threads or os.cpu_count()
  torch.set_num_threads(threads)
  task = config_lib.validate(cfg)
  host_state = optimizer.init_state(cfg, task)
  params = jax.tree.map(np.asarray, host_state["params"])
  batches = [data.train_batch(cfg, task, s) for s in range(8)]
  B, L = batches[0]["inputs"].shape

  # Faithfulness: the init parameters, and the same with the halting bias raised by 3 (shallower,
  # more varied depths, so the early exit fires), through the while_loop predictor.
  predict = runs.predictor(cfg, "while")
  dev_inputs = [jax.device_put(b["inputs"]) for b in batches]
  infer_compile_s = _timed(lambda: jax.block_until_ready(predict(params, dev_inputs[0])))
  shifted = jax.tree.map(lambda x: x, params)
  shifted["halt"] = {**params["halt"], "bias": params["halt"]["bias"] + 3.0}
  checks = [torch_twin.check_parity(cfg, p, batches[0]["inputs"], predict)
            for p in (params, shifted)]
  parity = {"faithful": all(c["faithful"] for c in checks),
            "max_logit_diff": max(c["max_logit_diff"] for c in checks),
            "depths_equal": all(c["depths_equal"] for c in checks),
            "params": checks[0]["jax_params"] if checks[0]["params_equal"] else None,
            "parity_mean_depth": [round(c["mean_depth"], 3) for c in checks]}
  common = {"variant": cfg.model.variant, "d_model": cfg.model.d_model, "batch": B, "seq_len": L,
            "k_max": cfg.model.k_max, "torch_threads": threads}

  # Train step, both from the same parameters on the same batches.
  opt = optimizer.make(cfg)
  parallel = DataParallel(cfg.parallel.mode, lambda st, b: train.train_step(cfg, opt, st, b))
  state = {"jax": parallel.put_state(host_state)}
  jax_batches = [parallel.put_batch(b) for b in batches]
  torch_batches = [torch_twin.to_torch_batch(b) for b in batches]
  trainer = torch_twin.Trainer(cfg, torch_twin.from_jax(cfg, params))
  count = {"jax": 0, "torch": 0}
  last = {}

  def jax_step():
    state["jax"], out = parallel(state["jax"], jax_batches[count["jax"] % len(batches)])
    jax.block_until_ready(out)
    count["jax"] += 1
    last["jax"] = out

  def torch_step():
    last["torch"] = trainer.train_step(torch_batches[count["torch"] % len(batches)])
    count["torch"] += 1

  train_compile_s = _timed(jax_step)
  torch_first_s = _timed(torch_step)
  loss_diff = abs(float(last["jax"]["mean"]["loss"]) - float(last["torch"]["loss"]))
  jax_s, torch_s = _alternate(jax_step, torch_step, steps, rounds)
  rows = [{**common, "phase": "train", "jax_s": round(jax_s, 5), "torch_s": round(torch_s, 5),
           "speed_ratio": round(torch_s / jax_s, 3), "jax_compile_s": round(train_compile_s, 3),
           "torch_first_s": round(torch_first_s, 3), "first_loss_diff": loss_diff,
           **parity, "faithful": parity["faithful"] and loss_diff <= 1e-5}]

  # Inference from the init parameters: while_loop predictor vs forward with the same early exit.
  dev_params = jax.device_put(params)
  twin = torch_twin.from_jax(cfg, params).eval()
  torch_inputs = [b["inputs"] for b in torch_batches]
  count = {"jax": 0, "torch": 0}
  iterations = {}

  def jax_infer():
    out = predict(dev_params, dev_inputs[count["jax"] % len(batches)])
    iterations["jax"] = int(jax.block_until_ready(out)["iterations"])
    count["jax"] += 1

  def torch_infer():
    with torch.inference_mode():
      _, aux = twin(torch_inputs[count["torch"] % len(batches)])
    iterations["torch"] = aux["iterations"]
    count["torch"] += 1

  jax_s, torch_s = _alternate(jax_infer, torch_infer, steps, rounds)
  rows.append({**common, "phase": "infer", "jax_s": round(jax_s, 5), "torch_s": round(torch_s, 5),
               "speed_ratio": round(torch_s / jax_s, 3),
               "jax_compile_s": round(infer_compile_s, 3), "iterations": iterations["jax"],
               **parity, "faithful": parity["faithful"]
               and iterations["jax"] == iterations["torch"]})
  return rows


def _run_compare(passthrough: list[str]) -> None:
  results = []
  for size in _SIZES.value:
    try:
      d_model, batch = (int(x) for x in size.split(":"))
    except ValueError:
      cli.fail(f"--compare_sizes entries are d_model:batch, got {size!r}")
    cmd = [sys.executable, __file__, "--child", "--compare-torch", *passthrough,
           f"--config.model.d_model={d_model}", f"--config.train.batch_size={batch}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
      cli.fail(f"d_model {d_model} batch {batch} failed: {cli.one_line(Exception(proc.stderr))}")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    results += rows
    if not _JSON.value:
      for r in rows:
        print(f"d_model {r['d_model']:>4} batch {r['batch']:>4} {r['phase']:<5}  jax "
              f"{r['jax_s'] * 1e3:8.2f} ms  torch {r['torch_s'] * 1e3:8.2f} ms  torch/jax "
              f"{r['speed_ratio']:.2f}  jax compile {r['jax_compile_s']:.1f} s  faithful "
              f"{r['faithful']} (max logit diff {r['max_logit_diff']:.1e}, torch threads "
              f"{r['torch_threads']})", file=sys.stderr)
  print(json.dumps({"results": results}))


def main(argv: list[str]) -> None:
  del argv
  if _COMPARE.value:
    if importlib.util.find_spec("torch") is None:
      print(INSTALL_TORCH)
      return
    if _CONFIG.value.model.dtype != "float32":
      cli.fail("--compare-torch compares with a float32 twin; drop --config.model.dtype")
    if _CHILD.value:
      print(json.dumps({"rows": compare_torch(_CONFIG.value, _STEPS.value, _ROUNDS.value,
                                                   _TORCH_THREADS.value)}))
      return
    _run_compare([a for a in sys.argv[1:]
                  if not a.startswith(("--variants", "--json", "--compare_sizes", "--child",
                                         "--compare-torch"))])
    return
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
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/sorting.py", "Config file.")
  _VARIANTS = flags.DEFINE_list("variants", ["anira_o", "anira_e", "fixed", "transformer"],
                                "Variants to time, each in its own process.")
  _STEPS = flags.DEFINE_integer("steps", 100, "Timed steps after compilation.")
  _JSON = flags.DEFINE_bool("json", False, "Print only the JSON line.")
  _CHILD = flags.DEFINE_bool("child", False, "Internal: time one variant in this process.")
  _COMPARE = flags.DEFINE_bool("compare-torch", False,
                               "Compare the config's variant with its PyTorch-eager twin.")
  _SIZES = flags.DEFINE_list("compare_sizes", ["64:64", "128:64", "256:128"],
                             "d_model:batch pairs for --compare-torch, each in its own process.")
  _ROUNDS = flags.DEFINE_integer("rounds", 2, "--compare-torch: alternations of the frameworks; "
                                 "the --steps timed steps of each are split over them.")
  _TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "--compare-torch: torch.set_num_threads "
                                       "value; 0 (default) means os.cpu_count().")
  cli.run(main, flags_parser=cli.config_parser(_CONFIG))
