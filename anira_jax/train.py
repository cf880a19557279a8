"""train_and_evaluate: the training loop, its logging, checkpoints and evaluation."""
import collections
import importlib.util
import json
import math
import os
import signal
import sys
import time
from typing import Callable

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from anira_jax import (checkpoint, cli, config as config_lib, data, evaluate, halting, losses,
                       model, optimizer, pipeline, runs)
from anira_jax.errors import UserError
from anira_jax.parallel import AXIS, DataParallel

COLLAPSE_STD = 0.1
COLLAPSE_LOGS = 3
IN_FLIGHT = 2   # steps dispatched ahead of the oldest one the loop has not seen finish


def train_step(cfg: ml_collections.ConfigDict, opt: optax.GradientTransformation, state: dict,
               batch: dict) -> tuple[dict, dict]:
  """One per-device step: gradients averaged over the data axis, metrics reduced across it."""
  def loss_fn(params):
    return losses.objective(cfg, params, batch, state["step"], AXIS)
  (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
  grads = jax.lax.pmean(grads, AXIS)
  updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
  new_state = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
               "opt_state": opt_state}
  return new_state, {"mean": jax.lax.pmean(aux["mean"], AXIS),
                     "sum": jax.lax.psum(aux["sum"], AXIS)}


def watched_step(cfg: ml_collections.ConfigDict, opt: optax.GradientTransformation,
                 carry: tuple[dict, dict], batch: dict) -> tuple[tuple[dict, dict], dict]:
  """train_step on (state, watch): the watch keeps, on the devices, the first step whose loss was
  not finite ("step", 0 while there is none) and that loss, so the loop can check every step's
  loss without waiting for each step to finish."""
  state, watch = carry
  state, out = train_step(cfg, opt, state, batch)
  loss = out["mean"]["loss"]
  first = (watch["step"] == 0) & ~jnp.isfinite(loss)
  return (state, {"step": jnp.where(first, state["step"], watch["step"]),
                  "loss": jnp.where(first, loss, watch["loss"])}), out


WATCH = {"step": np.int32(0), "loss": np.float32(0.0)}


def summarize(out: dict) -> dict:
  """Host-side metrics from the reduced step outputs."""
  m, s = jax.tree.map(np.asarray, out["mean"]), jax.tree.map(np.asarray, out["sum"])
  n = max(float(s["answer_tokens"]), 1.0)
  mean_depth = float(s["depth_sum"]) / n
  return {
      **{k: float(v) for k, v in m.items()},
      "token_accuracy": float(s["correct"]) / n,
      "mean_depth": mean_depth,
      "depth_std": math.sqrt(max(float(s["depth_sq_sum"]) / n - mean_depth**2, 0.0)),
      "depth_fraction": [round(float(x) / n, 6) for x in s["depth_hist"]],
      "halt_prob": [round(float(p / c), 6) if c else None
                    for p, c in zip(s["halt_prob_sum"], s["halt_prob_count"])],
  }


class CollapseMonitor:
  """Warns once when depth has collapsed for COLLAPSE_LOGS consecutive logs."""

  def __init__(self):
    self.streak, self.warned = 0, False

  def __call__(self, step: int, metrics: dict) -> str | None:
    collapsed = metrics["depth_std"] < COLLAPSE_STD or max(metrics["depth_fraction"]) == 1.0
    self.streak = self.streak + 1 if collapsed else 0
    if self.streak >= COLLAPSE_LOGS and not self.warned:
      self.warned = True
      return (f"warning: depth collapsed at step {step}: mean depth "
              f"{metrics['mean_depth']:.2f}, std {metrics['depth_std']:.3f} over "
              f"{COLLAPSE_LOGS} logs; see docs/halting.md for remedies")
    return None


def _format(step: int, m: dict) -> str:
  return (f"step {step:>6}  loss {m['loss']:.4f}  ce {m['ce']:.4f}  acc {m['token_accuracy']:.3f}"
          f"  depth {m['mean_depth']:.2f}±{m['depth_std']:.2f}  {m['steps_per_sec']:.1f} steps/s")


def _append_jsonl(path: str, record: dict, keep_until: int | None = None) -> None:
  """Appends a record; with keep_until, first drops lines of steps after it (a resumed run)."""
  if keep_until is not None and os.path.exists(path):
    with open(path) as f:
      lines = [l for l in f if json.loads(l)["step"] <= keep_until]
    with open(path, "w") as f:
      f.writelines(lines)
  if record:
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")


def stop_handler(stop: dict) -> Callable[[int, object], None]:
  """A SIGTERM/SIGINT handler recording the first signal in stop["signal"] (training then saves
  and stops after the current step); a second SIGINT (Ctrl-C) exits at once, without saving."""
  def handle(signum: int, _frame) -> None:
    if stop["signal"] is not None and signum == signal.SIGINT:
      print("second interrupt: exiting now, without saving", file=sys.stderr, flush=True)
      os._exit(cli.EXIT_INTERRUPTED)  # pylint: disable=protected-access
    stop["signal"] = stop["signal"] or signum
  return handle


def agreed_stop(local_signal: int | None) -> int:
  """The signal every process stops for (0: none): the largest received by any process. With
  several processes it is a collective, so that all of them save the same step and stop."""
  if jax.process_count() == 1:
    return local_signal or 0
  return int(multihost_utils.process_allgather(np.int32(local_signal or 0)).max())


class StopVote:
  """`agreed_stop` without waiting on the step in flight: one process stops for its own signal at
  once; several stop for the largest signal any of them had one step earlier, from an all-gather
  started at that step and read at this one. Every process reads the same vote at the same step,
  so all save the same step and stop."""

  def __init__(self, parallel: DataParallel):
    self._parallel, self._pending = parallel, None
    if jax.process_count() > 1:   # shard_map (pmap refuses several processes)
      self._max = jax.jit(jnp.max, out_shardings=jax.sharding.NamedSharding(
          parallel.mesh, jax.sharding.PartitionSpec()))

  def __call__(self, local_signal: int | None) -> int:
    if jax.process_count() == 1:
      return agreed_stop(local_signal)
    mine = np.full(len(self._parallel.local_devices), local_signal or 0, np.int32)
    vote, self._pending = self._pending, self._max(self._parallel.put_batch(mine))
    return 0 if vote is None else int(np.asarray(vote.addressable_data(0)))


class ProfileWindow:
  """A jax.profiler trace of train.profile_steps = (start, stop), the steps taking the state from
  step start to step stop (logged as steps start + 1 .. stop; () is off), under <workdir>/profile
  (a directory per process when there are several), for TensorBoard's profile plugin (xplane.pb)
  or ui.perfetto.dev (perfetto_trace.json.gz). Each step is annotated "train" with its number."""

  def __init__(self, steps, workdir: str):
    self.start, self.stop = tuple(steps) or (None, None)
    self.dir = os.path.join(workdir, "profile")
    if jax.process_count() > 1:
      self.dir = os.path.join(self.dir, f"process_{jax.process_index()}")
    self.tracing = False

  def begin(self, step: int) -> None:
    if self.start is not None and not self.tracing and self.start <= step < self.stop:
      jax.profiler.start_trace(self.dir, create_perfetto_trace=True)
      self.tracing = True

  def end(self, done: int, out) -> None:
    if self.tracing and done >= self.stop:
      jax.block_until_ready(out)
      self.close()

  def close(self) -> None:
    if self.tracing:
      self.tracing = False
      self.start = None   # one window per run
      jax.profiler.stop_trace()


class Scalars:
  """With train.tensorboard, the logged scalars as TensorBoard events under <workdir>/tensorboard,
  written by tensorboardX (imported only then); off until `open`. A run that resumes from step
  `start` appends an event file that begins with a restart at `start + 1` (purge_step: TensorBoard
  drops the earlier points from there on, as metrics.jsonl does)."""

  def __init__(self):
    self._writer = None

  def open(self, workdir: str, start: int) -> None:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start + 1)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self._writer is not None:
      for tag, value in scalars.items():
        self._writer.add_scalar(tag, value, step)
      self._writer.flush()   # visible to a running TensorBoard at once, as metrics.jsonl is

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def train_scalars(metrics: dict) -> dict[str, float]:
  """The scalars of a metrics.jsonl record (per-iteration lists aside) as "train/<key>"."""
  return {f"train/{k}": v for k, v in metrics.items() if isinstance(v, float)}


EVAL_SCALARS = (*evaluate.METRICS, "generation_sequence_accuracy")


def eval_scalars(result: dict) -> dict[str, float]:
  """The scalars of an evaluation: per size, EVAL_SCALARS as measured ("eval/<metric>/size_<n>"),
  their means over the sizes in and out of distribution ("eval/<metric>/<range>", the curves of
  `python -m anira_jax.plots`) and the alignment ("eval/alignment/spearman_*")."""
  scalars = {f"eval/alignment/{k}": v for k, v in result["alignment"].items()
             if isinstance(v, float)}
  for rng in evaluate.RANGES:
    sizes = {n: m for n, m in result["sizes"].items()
             if m["in_distribution"] == (rng == "in_distribution")}
    for key in EVAL_SCALARS:
      values = {n: m[key] for n, m in sizes.items() if key in m}
      scalars.update({f"eval/{key}/size_{n}": v for n, v in values.items()})
      if values:
        scalars[f"eval/{key}/{rng}"] = float(np.mean(list(values.values())))
  return scalars


def _finite(tree) -> bool:
  return all(np.isfinite(x).all() for x in jax.tree.leaves(tree))


def _diverged(what: str, step: int, last_good: int | None) -> UserError:
  return UserError(f"{what} at step {step}; training stopped, the last good checkpoint (step "
                   f"{last_good}) is kept; lower train.learning_rate or halting.penalty_weight")


def resume_config(cfg: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """cfg as it starts, or resumes, the run in workdir: train.schedule_steps resolved (a resumed
  run keeps its schedule); a UserError naming every changed field a resumed run may not change."""
  if not (os.path.isfile(os.path.join(workdir, "config.json")) and
          checkpoint.manager(workdir, create=False).latest_step() is not None):
    return config_lib.with_schedule(cfg)
  cfg, changed = config_lib.resume(runs.load_config(workdir), cfg)
  refused = [f"{key} {json.dumps(saved)} -> {json.dumps(new)}" for key, saved, new in changed
             if not config_lib.covered(key)]
  if refused:
    raise UserError(f"cannot resume {workdir}: its run was trained with another config "
                    f"({', '.join(refused)}); train this config in a new --workdir, or resume "
                    "with the saved values")
  return cfg


def _check_loop(t: ml_collections.ConfigDict) -> None:
  """train.data_workers, train.prefetch, train.profile_steps and train.tensorboard (how the loop
  runs, not what it trains: a resume may change them)."""
  if not (isinstance(t.data_workers, int) and t.data_workers >= 0):
    raise config_lib.ConfigError(f"train.data_workers must be an integer >= 0 (0: batches made "
                                 f"in the loop), got {t.data_workers!r}")
  if not (isinstance(t.prefetch, int) and t.prefetch >= 1):
    raise config_lib.ConfigError(f"train.prefetch must be an integer >= 1, got {t.prefetch!r}")
  window = tuple(t.profile_steps)
  if window and not (len(window) == 2 and all(isinstance(s, int) for s in window)
                     and 0 <= window[0] < window[1]):
    raise config_lib.ConfigError(f"train.profile_steps must be () (off) or (start, stop) with "
                                 f"0 <= start < stop, got {t.profile_steps!r}")
  if t.tensorboard and importlib.util.find_spec("tensorboardX") is None:
    raise config_lib.ConfigError("train.tensorboard needs tensorboardX, which is not installed: "
                                 'pip install -e ".[tensorboard]"')


def _check_devices(cfg: ml_collections.ConfigDict, n: int) -> None:
  if cfg.train.batch_size % n:
    raise config_lib.ConfigError(
        f"train.batch_size {cfg.train.batch_size} is not divisible by the {n} devices; "
        f"use a multiple of {n}")


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                       devices: list[jax.Device] | None = None) -> dict:
  """Trains (resuming from the latest checkpoint in workdir), evaluates, writes eval.json.

  Runs data-parallel over `devices` (default: all). Returns the evaluation result, or {} when
  SIGTERM or SIGINT stopped training (at the same step on every process) after a checkpoint."""
  stop, scalars = {"signal": None}, Scalars()
  previous = {s: signal.signal(s, stop_handler(stop)) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    return _train_and_evaluate(cfg, workdir, devices, stop, scalars)
  finally:   # once the run's arrays, steps and checkpoint manager are released
    scalars.close()
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                        devices: list[jax.Device] | None, stop: dict, scalars: Scalars) -> dict:
  task = config_lib.validate(cfg)
  devices = jax.devices() if devices is None else devices
  _check_devices(cfg, len(devices))
  _check_loop(cfg.train)
  cfg = resume_config(cfg, workdir)
  opt = optimizer.make(cfg)
  def train(carry, batch):   # the name profiles show
    return watched_step(cfg, opt, carry, batch)
  parallel = DataParallel(cfg.parallel.mode, train, devices)
  mngr = checkpoint.manager(workdir)
  host_state = optimizer.init_state(cfg, task)
  restored = checkpoint.restore(mngr, host_state)
  if restored is not None:   # on the host: each process places its copy (no cross-host transfer)
    host_state = jax.tree.map(np.asarray, restored)
  start = int(host_state["step"])
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(cfg.to_json(indent=1))
    _append_jsonl(os.path.join(workdir, "metrics.jsonl"), {}, keep_until=start)
    if cfg.train.tensorboard:
      scalars.open(workdir, start)
  if restored is not None and is_main:
    print(f"resuming from step {start} in {workdir}")
  carry = parallel.put_state((host_state, WATCH))
  predict = evaluate.predictors(cfg)
  eval_sets = data.eval_sets(cfg, task)
  rows = parallel.process_slice(cfg.train.batch_size)

  def write_eval(step: int, result: dict, records: dict) -> None:   # on the main process
    evaluate.write(workdir, step, result, records)
    scalars.write(step, eval_scalars(result))

  monitor = CollapseMonitor()
  vote = StopVote(parallel)
  profile = ProfileWindow(cfg.train.profile_steps, workdir)
  bar = tqdm.tqdm(total=cfg.train.steps, initial=start, unit="step", dynamic_ncols=True,
                  disable=not (is_main and sys.stdout.isatty()) or bool(os.environ.get("CI")))
  say = bar.write if not bar.disable else print if is_main else lambda _: None
  logged, tick = start, time.perf_counter()
  in_flight = collections.deque()

  def check(done: int, params=None) -> None:
    """Raises the divergence error if some step's loss so far, or `params`, is not finite."""
    watch = parallel.get_state(carry[1])
    if watch["step"]:
      raise _diverged(f"loss became {float(watch['loss'])}", int(watch["step"]),
                      mngr.latest_step())
    if params is not None and not _finite(params):   # an update after a finite loss can
      raise _diverged("the parameters or optimizer state became non-finite", done,  # overflow
                      mngr.latest_step())

  try:
    with pipeline.Batches(cfg, task, start, rows, cfg.train.data_workers,
                          cfg.train.prefetch) as batches:
      for step in range(start, cfg.train.steps):
        profile.begin(step)
        with jax.profiler.StepTraceAnnotation("train", step_num=step + 1):
          carry, out = parallel(carry, parallel.put_batch(next(batches)))
        done = step + 1
        in_flight.append(out["mean"]["loss"])   # bounded run-ahead: wait for an older step only
        if len(in_flight) > IN_FLIGHT:
          jax.block_until_ready(in_flight.popleft())
        bar.update(1)
        profile.end(done, out)
        stopping = vote(stop["signal"])
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
          check(done)
          metrics = summarize(out)
          metrics["steps_per_sec"] = (done - logged) / (time.perf_counter() - tick)
          logged, tick = done, time.perf_counter()
          if is_main:
            _append_jsonl(os.path.join(workdir, "metrics.jsonl"), {"step": done, **metrics})
            scalars.write(done, train_scalars(metrics))
          say(_format(done, metrics))
          if model.variant(cfg.model).adaptive and (warning := monitor(done, metrics)):
            say(warning)
        if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps or stopping:
          host = parallel.get_state(carry[0])
          check(done, host)
          checkpoint.save(mngr, done, host)
        if done % cfg.train.eval_every == 0 and done < cfg.train.steps:
          params = parallel.get_state(carry[0])["params"]
          check(done, params)   # on every process, so that all stop together
          if is_main:
            params = halting.at_step(params, done, cfg.halting.depth_warmup)
            write_eval(done, *evaluate.evaluate(cfg, task, params, predict, eval_sets))
        if stopping:
          mngr.wait_until_finished()
          say(f"stopped by signal {stopping} at step {done}; checkpoint saved, rerun the same "
              "command to resume")
          return {}
  finally:
    profile.close()
    bar.close()
    mngr.wait_until_finished()
  final = parallel.get_state(carry[0])
  if start == cfg.train.steps and restored is None:
    checkpoint.save(mngr, 0, final)
    mngr.wait_until_finished()
  params = halting.at_step(final["params"], int(final["step"]), cfg.halting.depth_warmup)
  result, records = evaluate.evaluate(cfg, task, params, predict, eval_sets)
  if is_main:
    write_eval(int(final["step"]), result, records)
  return result
