"""Trained runs for users: `load_run(workdir).predict(inputs, mode="while"|"compact"|"scan")`, and
greedy generation from prompts, `.generate(prompts, max_new_tokens)`."""
import dataclasses
import functools
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from anira_jax import (checkpoint, cli, config as config_lib, decoding, halting, model, optimizer,
                       recurrence, tasks)
from anira_jax.errors import UserError
from anira_jax.tasks.base import PAD, SEP

Predict = Callable[[model.Params, jax.Array], dict]


def predictor(cfg: ml_collections.ConfigDict, mode: str, forced: bool = False) -> Predict:
  """jit(params, inputs [B, L]) -> {"logits" [B, L, V], "depth" [B, L], "iterations"}; with
  `forced`, jit(params, inputs, k): every token halts at iteration k (one compilation for all k)."""
  if mode not in recurrence.DRIVERS:
    raise ValueError(f"mode must be one of {', '.join(recurrence.DRIVERS)}, got {mode!r}")

  def predict(params: model.Params, inputs_BxL: jax.Array, halt_at: jax.Array | None = None):
    logits, final = recurrence.forward(cfg, params, inputs_BxL, mode, halt_at)
    return {"logits": logits, "depth": final.depth_BxL, "iterations": final.t}
  return jax.jit(predict if forced else lambda params, inputs_BxL: predict(params, inputs_BxL))


def generator(cfg: ml_collections.ConfigDict, schedule: str, forced: bool = False,
              compact: bool = False) -> Callable:
  """jit(params, prompts [B, P], lengths [B], max_new_tokens) -> decoding.generate's outputs;
  with `forced`, jit(..., k): every token halts at iteration k; `compact`: decoding.generate's.
  One compilation per prompt shape and max_new_tokens."""
  if schedule not in decoding.SCHEDULES:
    raise ValueError(f"schedule must be one of {', '.join(decoding.SCHEDULES)}, got {schedule!r}")

  def generate(params, prompts_BxP, lengths_B, max_new_tokens, halt_at=None):
    return decoding.generate(cfg, params, prompts_BxP, lengths_B, max_new_tokens, schedule,
                             halt_at, compact=compact)
  return jax.jit(generate, static_argnames="max_new_tokens")


def _check_depth(depth, k_max: int) -> None:
  if depth is not None and not (isinstance(depth, (int, np.integer)) and 1 <= depth <= k_max):
    raise ValueError(f"depth must be an integer from 1 to model.k_max={k_max}, got {depth!r}")


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  task: tasks.Task
  params: model.Params
  step: int

  @functools.cached_property
  def _predictors(self) -> dict[tuple[str, bool], Predict]:
    return {(mode, forced): predictor(self.config, mode, forced)
            for mode in recurrence.DRIVERS for forced in (False, True)}

  def predict(self, inputs, mode: str = "while", depth: int | None = None) -> dict:
    """Logits, per-token depth (block applications) and loop iterations, as NumPy arrays.

    `depth` = k makes every real token halt at exactly iteration k (1 <= k <= model.k_max): the
    output is what the halting rule gives had it halted there (the model's own weights before k,
    the remainder at k); for `fixed` and `transformer`, the first k iterations or layers."""
    inputs = np.asarray(inputs)
    if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
      raise ValueError(f"inputs must be an integer array [batch, length], got {inputs.dtype} "
                       f"{inputs.shape}")
    bad = inputs[(inputs < 0) | (inputs >= self.task.vocab_size)]
    if bad.size:
      raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, "
                       f"{self.task.vocab_size}) of task {self.task.name!r}")
    row, col = np.nonzero((inputs[:, :-1] == PAD) & (inputs[:, 1:] != PAD))
    if row.size:   # attention has no key-padding mask: only trailing PAD leaves tokens unchanged
      raise ValueError(f"row {int(row[0])} has PAD (id {PAD}) at position "
                       f"{int(col[0])} before a token; pad rows at the end only (right-padding)")
    if mode not in recurrence.DRIVERS:
      raise ValueError(f"mode must be one of {', '.join(recurrence.DRIVERS)}, got {mode!r}")
    _check_depth(depth, self.config.model.k_max)
    args = (self.params, inputs.astype(np.int32)) + (() if depth is None else (np.int32(depth),))
    out = self._predictors[(mode, depth is not None)](*args)
    return jax.tree.map(np.asarray, out)

  @functools.cached_property
  def _generators(self) -> dict[tuple[str, bool, bool], Callable]:
    return {(schedule, forced, compact): generator(self.config, schedule, forced, compact)
            for schedule in decoding.SCHEDULES for forced in (False, True)
            for compact in (False, True)}

  def generate(self, prompts, max_new_tokens: int, schedule: str = "lockstep",
               depth: int | None = None, compact: bool = False) -> dict:
    """Greedy continuation of each prompt (token ids ending with SEP, as the inputs of
    `task.sample` up to the answer) by max_new_tokens tokens, as NumPy arrays: "tokens" [B, M],
    "depth" [B, M] (block applications of the position that produced each token), "logits"
    [B, M, V], "iterations" (block iterations run one after another: "prefill_iterations" on the
    prompts, then "decode_iterations"). Each token is the argmax of `predict(prompt + generated)`
    at the position before it, with the same depth.

    `schedule`: "lockstep" (rows wait for the deepest) or "depthwise" (each row at its own
    iteration: fewer block steps, each dearer on CPU; docs/design.md, Generation), same outputs;
    `depth` = k: every token halts at iteration k, as in `predict`; `compact`: the block runs
    only on what is still active, the prompt tokens in the prefill (as `predict(mode="compact")`)
    and the rows at each lock-step position: the same outputs up to float rounding; it pays with
    many prompts in a batch, not with one (benchmarks/README.md)."""
    prompts = self._check_prompts(prompts, max_new_tokens)
    if schedule not in decoding.SCHEDULES:
      raise ValueError(f"schedule must be one of {', '.join(decoding.SCHEDULES)}, "
                       f"got {schedule!r}")
    _check_depth(depth, self.config.model.k_max)
    lengths = np.array([len(p) for p in prompts], np.int32)
    padded = np.full((len(prompts), lengths.max()), PAD, np.int32)
    for row, prompt in zip(padded, prompts):
      row[:len(prompt)] = prompt
    args = (self.params, padded, lengths, max_new_tokens) + (
        () if depth is None else (np.int32(depth),))
    if len(prompts) == 1:   # one row: both schedules are the lock-step loop (decoding.generate)
      schedule = "lockstep"
    if compact:
      recurrence.check_compactable(self.config)
    out = self._generators[(schedule, depth is not None, compact)](*args)
    return jax.tree.map(np.asarray, out)

  def _check_prompts(self, prompts, max_new_tokens) -> list[np.ndarray]:
    """The prompts as NumPy arrays, or ValueError saying what to change."""
    if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer))
        or max_new_tokens < 1):
      raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if len(prompts) == 0:
      raise ValueError("prompts is empty; pass a list of 1-D integer arrays of token ids, each "
                       f"ending with SEP (id {SEP})")
    max_len, vocab = self.config.model.max_len, self.task.vocab_size
    checked = []
    for i, prompt in enumerate(prompts):
      prompt = np.asarray(prompt)
      if prompt.ndim != 1 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt {i} must be a 1-D integer array of token ids, got "
                         f"{prompt.dtype} {prompt.shape}")
      bad = prompt[(prompt < 0) | (prompt >= vocab)]
      if bad.size:
        raise ValueError(f"prompt {i} has token id {int(bad[0])}, outside the vocabulary "
                         f"[0, {vocab}) of task {self.task.name!r}")
      if PAD in prompt:
        raise ValueError(f"prompt {i} has PAD (id {PAD}) at position "
                         f"{int(np.argmax(prompt == PAD))}; pass prompts without padding")
      if prompt.size == 0 or prompt[-1] != SEP:
        raise ValueError(f"prompt {i} does not end with SEP (id {SEP}); end each prompt with SEP, "
                         "as task.sample's inputs do before the answer")
      if prompt.size + max_new_tokens > max_len:
        raise ValueError(f"prompt {i} has {prompt.size} tokens and max_new_tokens is "
                         f"{max_new_tokens}: {prompt.size + max_new_tokens} > model.max_len="
                         f"{max_len}; shorten the prompt or lower max_new_tokens")
      checked.append(prompt)
    return checked


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"no run in {workdir!r} (missing config.json); train one with "
                    "python -m anira_jax.main --config=configs/<task>.py --workdir=DIR")
  remedy = "it is not a run's config: restore it, or train in a new --workdir"
  saved = cli.read_json(path, remedy)
  try:   # options added after the run was trained take their default values
    cfg = config_lib.default(saved["task"]["name"], saved["model"]["variant"])
    cfg.update(saved)
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"cannot read {path} ({type(e).__name__}: {cli.one_line(e)}); "
                    f"{remedy}") from None
  return cfg


def load_run(workdir: str) -> Run:
  """The latest checkpoint of a training run directory."""
  cfg = load_config(workdir)
  task = config_lib.validate(cfg)
  mngr = checkpoint.manager(workdir, create=False)
  like = jax.eval_shape(lambda: optimizer.init_state(cfg, task))
  state = checkpoint.restore(mngr, like)
  if state is None:
    raise UserError(f"no checkpoint in {workdir}/checkpoints; train first or check the path")
  step = int(state["step"])
  params = halting.at_step(state["params"], step, cfg.halting.depth_warmup)
  return Run(config=cfg, task=task, params=jax.tree.map(np.asarray, params), step=step)
