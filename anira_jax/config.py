"""Default configuration and its validation. Files in configs/ start from `default(...)`."""
import json
from typing import Any, Sequence

import ml_collections

from anira_jax import cli, errors, halting, model, recurrence, tasks
from anira_jax.model import VARIANTS

PARALLEL_MODES = ("shard_map", "pmap")
DISTRIBUTED = ("off", "auto", "explicit")
POSITIONS = ("rope", "none")
DTYPES = ("float32", "bfloat16")
OUTPUTS = ("state", "distribution")
PENALTY_TOKENS = ("all", "answer")
SUPERVISIONS = ("penalty", "correctness")
EXIT_RULES = ("unit", "readout")
# How often a run logs, evaluates and saves (a prefix ending in "." would cover a section).
CADENCE = ("train.log_every", "train.eval_every", "train.checkpoint_every")
# Fields a resumed run may change: how long it trains, its cadence, how it executes
# (cli.EXECUTION) and how it is evaluated. Any other change (model, task, halting, optimisation,
# seed) makes another run.
RESUMABLE = ("train.steps", *CADENCE, *cli.EXECUTION, "task.eval_sizes", "eval.")

# halting.* of plain ACT, stated in full: the halting ablation starts every remedy from it, so its
# cells do not move when HALTING_DEFAULT does.
HALTING_PLAIN: dict[str, Any] = {
    "output": "state",         # readout of sum_t w_t h_t, or "distribution": sum_t w_t p_t
    "threshold": 0.01,         # halt once the survival prod(1 - lambda) <= threshold
    "temperature": 1.0,        # lambda = sigmoid(logit / temperature)
    "bias_init": 0.0,          # halting-unit bias at init (negative: deep start)
    "penalty": "ponder",       # a rule registered in halting.py (halting.PENALTIES)
    "penalty_weight": 0.01,
    "penalty_tokens": "all",   # tokens the penalty averages over: "all" non-PAD, or "answer"
    "input_norm": False,       # LayerNorm on the halting unit's input
    "depth_warmup": 0,         # steps with the halting unit off: every token runs k_max
    "penalty_warmup": 0,       # steps with no penalty
    "penalty_ramp": 0,         # steps of linear ramp after the warm-up
    "prior_lambda": 0.2,       # geometric prior parameter for kl_geometric
    # What trains the halting unit: "penalty", the output weights and the compute penalty (ACT);
    # "correctness", a binary cross-entropy on whether the output had the token halted at that
    # iteration is right (an exit classifier), with cross-entropy on every exit (losses.py; for
    # `fixed`, which has no unit, the cross-entropy on every iteration's readout alone).
    "supervision": "penalty",
    # Who decides that a token halts (anira_o): "unit", the halting unit; "readout", the readout
    # after the iteration (added after the exits analysis, docs/design.md): halt once its top
    # probability reaches exit_confidence or, from the second iteration on, its KL divergence
    # from the readout after the iteration before is below exit_stability (0: never).
    "exit_rule": "unit",
    "exit_confidence": 0.9,
    "exit_stability": 0.03,
}
# The halting ablation's remedies: the halting.* fields each changes from HALTING_PLAIN
# (ablation.remedies adds one for each registered penalty that none of these uses).
HALTING_REMEDIES: dict[str, dict] = {
    "plain_ponder": {},
    "deep_start": {"bias_init": -3.0},
    "warmup": {"penalty_warmup": 300, "penalty_ramp": 300},
    "kl_geometric": {"penalty": "kl_geometric", "prior_lambda": 0.3},
    "kl_uniform": {"penalty": "kl_uniform"},
    "deep_warmup_distribution": {"bias_init": -3.0, "penalty_warmup": 300, "penalty_ramp": 300,
                                 "output": "distribution"},
}
# The remedy the ablation chose (docs/halting.md; docs/design.md, "The halting default"): the
# halting.* default of every config.
HALTING_DEFAULT = "deep_start"


class ConfigError(errors.UserError, ValueError):
  """A configuration that cannot run; the message says what to change."""


def default(task: str, variant: str) -> ml_collections.ConfigDict:
  """Tiny CPU defaults shared by every task; a config file then sets the task's sizes."""
  _check_variant(variant)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.task = ml_collections.ConfigDict()
  c.task.name = task
  c.task.options = ml_collections.ConfigDict()   # family knobs, passed to tasks.get
  c.task.train_sizes = (2, 8)                    # inclusive (min, max)
  c.task.eval_sizes = (2, 4, 8, 12, 16)
  c.task.curriculum_steps = 0                    # largest training size grows min -> max (0: off)

  c.model = ml_collections.ConfigDict()
  c.model.variant = variant
  c.model.d_model = 64
  c.model.num_heads = 4
  c.model.mlp_ratio = 4
  c.model.prelude_layers = 1
  c.model.k_max = 8                 # iterations of the core (layers, for "transformer")
  c.model.max_len = 64
  c.model.positions = "rope"
  # Compute dtype of activations and matmuls: "bfloat16" on GPU/TPU; parameters, the recurrent
  # state, halting decisions, softmaxes and losses stay float32 (docs/design.md, "Compute dtype").
  c.model.dtype = "float32"
  c.model.remat = "dots"            # backward pass: recompute all but matmuls ("none", "full")
  c.model.input_injection = False   # the block reads state + prelude output at every iteration
  c.model.iteration_embedding = False  # ... + a learned vector per iteration (UT timestep signal)

  c.halting = ml_collections.ConfigDict({**HALTING_PLAIN, **HALTING_REMEDIES[HALTING_DEFAULT]})

  c.train = ml_collections.ConfigDict()
  c.train.steps = 1500
  c.train.schedule_steps = 0        # LR schedule length; 0: train.steps of the run's first start
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 100
  c.train.weight_decay = 0.01
  c.train.grad_clip = 1.0
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.data_workers = 0          # processes making batches ahead of the loop (0: in the loop)
  c.train.prefetch = 2              # batches the workers make ahead
  c.train.profile_steps = ()        # (start, stop): a jax.profiler trace of those steps
  c.train.tensorboard = False       # also the logged scalars under <workdir>/tensorboard

  c.eval = ml_collections.ConfigDict()
  c.eval.seed = 1234                # evaluation sets do not depend on the training seed
  c.eval.examples = 256             # per size
  c.eval.data_dir = ""              # frozen sets (python -m anira_jax.tasks build); "": generate
  c.eval.generation = True          # also sequence accuracy by greedy generation (Run.generate)

  c.parallel = ml_collections.ConfigDict()
  c.parallel.mode = "shard_map"
  c.parallel.distributed = "off"      # "auto": jax.distributed.initialize() detects the cluster
  c.parallel.coordinator_address = "" # "explicit": host:port of process 0, and the two below
  c.parallel.num_processes = 1
  c.parallel.process_id = 0
  return c


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _check_variant(name: str) -> None:
  """Raises ConfigError unless `name` is a key of model.VARIANTS."""
  _check(name in VARIANTS, f"unknown variant {name!r}; valid variants: {', '.join(VARIANTS)}")


def _sizes(value, name: str) -> tuple[int, ...]:
  try:
    sizes = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    raise ConfigError(f"{name} must be a tuple of integers, got {value!r}") from None
  _check(all(s == v for s, v in zip(sizes, value)), f"{name} must hold integers, got {value!r}")
  return sizes


def validate(c: ml_collections.ConfigDict) -> tasks.Task:
  """Raises ConfigError naming the first problem; returns the configured task."""
  try:
    task = tasks.get(c.task.name, **c.task.options)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  m, h = c.model, c.halting
  _check_variant(m.variant)
  train = _sizes(c.task.train_sizes, "task.train_sizes")
  _check(len(train) == 2, f"task.train_sizes is (min, max), got {c.task.train_sizes!r}")
  lo, hi = train
  _check(lo <= hi, f"task.train_sizes {train}: min {lo} exceeds max {hi}")
  _check(c.task.curriculum_steps >= 0,
         f"task.curriculum_steps must be >= 0 (0: no curriculum), got {c.task.curriculum_steps}")
  evals = _sizes(c.task.eval_sizes, "task.eval_sizes")
  _check(len(evals) > 0, "task.eval_sizes is empty")
  for size in (lo,) + evals:
    _check(size >= task.min_size,
           f"size {size} is below the {task.name} minimum {task.min_size}; raise task sizes")
  for size in (lo, hi) + evals:   # the family's own bounds (e.g. graph: at most max_nodes)
    try:
      task.check_size(size)
    except ValueError as e:
      raise ConfigError(f"{e}; change task.train_sizes or task.eval_sizes") from None
  _check(max(evals) > hi,
         f"task.eval_sizes {evals} has no size above the training maximum {hi}: "
         "add at least one out-of-distribution size")
  longest = max(task.seq_len(s) for s in (hi,) + evals)
  _check(longest <= m.max_len,
         f"size {max((hi,) + evals)} needs sequence length {longest} > model.max_len "
         f"{m.max_len}; raise model.max_len or lower the sizes")
  _check(m.d_model > 0 and m.num_heads > 0 and m.d_model % (2 * m.num_heads) == 0,
         f"model.d_model {m.d_model} must be a positive multiple of 2 * model.num_heads")
  _check(m.k_max >= 1 and m.prelude_layers >= 0, "model.k_max >= 1 and model.prelude_layers >= 0")
  _check(m.remat in recurrence.REMAT,
         f"model.remat must be one of {', '.join(recurrence.REMAT)}, got {m.remat!r}")
  _check(m.positions in POSITIONS, f"model.positions must be one of {', '.join(POSITIONS)}")
  _check(m.dtype in DTYPES, f"model.dtype must be one of {', '.join(DTYPES)}, got {m.dtype!r}")
  _check(h.penalty in halting.PENALTIES,
         f"unknown halting.penalty {h.penalty!r}; valid (registered in anira_jax/halting.py): "
         f"{', '.join(halting.PENALTIES)}")
  _check(h.output in OUTPUTS, f"halting.output must be one of {', '.join(OUTPUTS)}")
  _check(h.penalty_tokens in PENALTY_TOKENS,
         f"halting.penalty_tokens must be one of {', '.join(PENALTY_TOKENS)}, "
         f"got {h.penalty_tokens!r}")
  _check(h.supervision in SUPERVISIONS,
         f"halting.supervision must be one of {', '.join(SUPERVISIONS)}, got {h.supervision!r}")
  _check(h.exit_rule in EXIT_RULES,
         f"halting.exit_rule must be one of {', '.join(EXIT_RULES)}, got {h.exit_rule!r}")
  _check(h.exit_rule == "unit" or (model.variant(m).halting == "online"
                                   and h.supervision == "correctness"),
         "halting.exit_rule=readout decides from the readout after each iteration: it needs the "
         "online variant anira_o and halting.supervision=correctness (which trains every exit)")
  _check(0.0 < h.exit_confidence <= 1.0 and h.exit_stability >= 0.0,
         "halting.exit_confidence must be in (0, 1] and halting.exit_stability >= 0")
  _check(0.0 <= h.threshold < 1.0, "halting.threshold must be in [0, 1)")
  _check(h.temperature > 0, "halting.temperature must be positive")
  _check(h.depth_warmup >= 0, f"halting.depth_warmup must be >= 0, got {h.depth_warmup}")
  _check(0.0 < h.prior_lambda < 1.0, "halting.prior_lambda must be in (0, 1)")
  t = c.train
  _check(t.steps >= 0, f"train.steps must be >= 0, got {t.steps}")
  _check(t.schedule_steps >= 0,
         f"train.schedule_steps must be >= 0 (0: train.steps), got {t.schedule_steps}")
  _check(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}")
  for every in ("log_every", "eval_every", "checkpoint_every"):
    _check(t[every] > 0, f"train.{every} must be positive, got {t[every]}")
  _check(c.eval.examples > 0, f"eval.examples must be positive, got {c.eval.examples}")
  _check(c.parallel.distributed in DISTRIBUTED,
         f"parallel.distributed must be one of {', '.join(DISTRIBUTED)}")
  _check(c.parallel.distributed != "explicit" or (
      c.parallel.coordinator_address and 0 <= c.parallel.process_id < c.parallel.num_processes),
         "parallel.distributed=explicit needs parallel.coordinator_address=host:port and "
         "0 <= parallel.process_id < parallel.num_processes")
  _check(c.parallel.mode in PARALLEL_MODES,
         f"parallel.mode must be one of {', '.join(PARALLEL_MODES)}, got {c.parallel.mode!r}")
  return task


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict)
               else {prefix + key: value})
  return out


def with_schedule(c: ml_collections.ConfigDict, inherited: int = 0) -> ml_collections.ConfigDict:
  """A copy of c with train.schedule_steps resolved: its own if set, else `inherited` (the saved
  run's), else c.train.steps."""
  c = c.copy_and_resolve_references()
  c.train.schedule_steps = c.train.schedule_steps or inherited or c.train.steps
  return c


def resume(saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict
           ) -> tuple[ml_collections.ConfigDict, list[tuple[str, Any, Any]]]:
  """`new` as it continues the run saved with config `saved` (train.schedule_steps inherited
  when 0), and (field, saved value, new value) of every field where the two differ."""
  saved = with_schedule(saved)
  new = with_schedule(new, saved.train.schedule_steps)
  return new, differences(saved, new)


def differences(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict
                ) -> list[tuple[str, Any, Any]]:
  """(field, value in a, value in b) of every field where configs a and b differ, in key order."""
  a, b = _leaves(json.loads(a.to_json())), _leaves(json.loads(b.to_json()))
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def covered(field: str, fields: Sequence[str] = RESUMABLE) -> bool:
  """Whether `field` is one of `fields` (an entry ending in "." covers a section)."""
  return any(field == f or (f.endswith(".") and field.startswith(f)) for f in fields)
