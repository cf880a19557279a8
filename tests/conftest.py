"""Shared set-up of the core tests: 2 CPU devices, strict rank promotion, tiny configs.

XLA_FLAGS must be set before JAX is imported anywhere, so it is set here, at the top of the first
module pytest imports: every test sees two CPU devices.

Compilation dominates the run time of these tests (a tiny training step takes seconds to compile
and milliseconds to run), so the session shares one persistent XLA compilation cache, in a
temporary directory removed at the end, between the tests and the `python -m anira_jax...`
children they start. Identical programs (the same tiny config trained by several tests) then
compile once. The cache stores the compiled executables, so it changes no result.
"""
import atexit
import functools
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

_DEVICES_FLAG = "--xla_force_host_platform_device_count=2"
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if not f.startswith("--xla_force_host_platform_device_count")] + [_DEVICES_FLAG])
os.environ["JAX_PLATFORMS"] = "cpu"

REPO = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# One cache for the session: pytest-xdist workers inherit it from the process that made it.
_CACHE_DIR = os.environ.get("ANIRA_TESTS_XLA_CACHE", "")
if not _CACHE_DIR:
  _CACHE_DIR = os.environ["ANIRA_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="anira_tests_xla_")
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

from anira_jax import config as config_lib  # noqa: E402
from anira_jax import data, halting, model, recurrence  # noqa: E402

VARIANTS = model.VARIANTS
LOOPED = ("anira_o", "anira_e")


@functools.cache
def _config_module():
  spec = importlib.util.spec_from_file_location("_sorting_config", REPO / "configs" / "sorting.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# configs/sorting.py shrunk to seconds on CPU. The halting bias +1 with threshold 0.1 makes tokens
# halt at different depths from the start. warmup_steps 50 exceeds every tiny run's train.steps,
# so the learning-rate schedule (horizon max(train.steps, warmup_steps + 1)) and hence the compiled
# training step do not depend on train.steps.
TINY = {
    "task.train_sizes": (2, 4),
    "task.eval_sizes": (2, 4, 6),
    "model.d_model": 16,
    "model.num_heads": 2,
    "model.mlp_ratio": 2,
    "model.prelude_layers": 1,
    "model.k_max": 4,
    "model.max_len": 32,
    "halting.bias_init": 1.0,
    "halting.threshold": 0.1,
    "train.steps": 30,
    "train.batch_size": 8,
    "train.learning_rate": 3e-3,
    "train.warmup_steps": 50,
    "train.log_every": 10,
    "train.eval_every": 1000,
    "train.checkpoint_every": 1000,
    "eval.examples": 16,
    "eval.generation": False,   # one compilation less per run; tests/test_evaluate.py turns it on
}


def _set(c, dotted: str, value) -> None:
  *path, leaf = dotted.split(".")
  node = c
  for part in path:
    node = node[part]
  if leaf not in node:
    raise KeyError(f"no config key {dotted}")
  node[leaf] = value


def tiny_config(variant: str = "anira_o", **overrides):
  """configs/sorting.py:variant with TINY applied, then `overrides`.

  Overrides use "__" for the dots of a config path: tiny_config("fixed", train__steps=20)."""
  c = _config_module().get_config(variant)
  for key, value in TINY.items():
    _set(c, key, value)
  for key, value in overrides.items():
    _set(c, key.replace("__", "."), value)
  config_lib.validate(c)
  return c


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
  return tiny_config


@pytest.fixture
def depth_squared_penalty():
  """halting.penalty="depth_squared", a toy penalty (depth^2 per token) registered as a new rule
  in halting.py would be, for one test; yields its name and unregisters it afterwards."""
  @halting.penalty_rule("depth_squared")
  def depth_squared(weights_BxLxK, logits_BxLxK, depth_BxL, options):
    del weights_BxLxK, logits_BxLxK, options
    return jnp.square(depth_BxL.astype(jnp.float32))
  yield "depth_squared"
  del halting.PENALTIES["depth_squared"]


def tiny_flags(**overrides) -> list[str]:
  """The command-line flags giving tiny_config(variant, **overrides) (variant aside)."""
  values = {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}
  flags = []
  for key, value in values.items():
    text = ("(" + ",".join(map(str, value)) + ")") if isinstance(value, tuple) else str(value)
    flags.append(f"--config.{key}={text}")
  return flags


def tiny_batch(cfg, step: int = 0) -> dict:
  """A training batch of cfg (mixed sizes, so it has PAD positions)."""
  return data.train_batch(cfg, config_lib.validate(cfg), step)


def random_params(cfg, seed: int = 0, halt_bias: float | None = None):
  task = config_lib.validate(cfg)
  bias = cfg.halting.bias_init if halt_bias is None else halt_bias
  return model.init_params(cfg.model, task.vocab_size, jax.random.key(seed), bias,
                           cfg.halting.input_norm)


@functools.cache
def _jitted_forward(cfg_json: str, mode: str):
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  return jax.jit(lambda params, inputs: recurrence.forward(cfg, params, inputs, mode))


def forward(cfg, params, inputs, mode: str = "scan"):
  """recurrence.forward, jitted once per (config, mode) for the whole session."""
  return _jitted_forward(cfg.to_json(), mode)(params, inputs)


def last_metrics(workdir) -> dict:
  lines = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
  return json.loads(lines[-1])


def read_eval(workdir) -> dict:
  return json.loads(pathlib.Path(workdir, "eval.json").read_text())


# Subprocesses ------------------------------------------------------------------------------------

def child_env() -> dict:
  """Environment of `python -m anira_jax...` children: 2 CPU devices, no progress bar, this
  session's compilation cache."""
  env = dict(os.environ)
  env.update(XLA_FLAGS=os.environ["XLA_FLAGS"], JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p]),
             JAX_COMPILATION_CACHE_DIR=_CACHE_DIR,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def run_module(module: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=child_env(),
                        capture_output=True, text=True, timeout=timeout, check=False)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
  return [line for line in proc.stderr.splitlines() if line.strip()]


# Trained runs shared by several test modules ----------------------------------------------------

@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """trained_run(variant) -> workdir of a 30-step tiny_config(variant) run, trained once per
  session. Treat it as read-only (copy it before changing anything)."""
  from anira_jax import train  # pylint: disable=import-outside-toplevel
  cache = {}

  def get(variant: str = "anira_o") -> pathlib.Path:
    if variant not in cache:
      workdir = tmp_path_factory.mktemp(f"trained_{variant}")
      train.train_and_evaluate(tiny_config(variant), str(workdir))
      cache[variant] = workdir
    return cache[variant]
  return get


@pytest.fixture(scope="session")
def reproduced_ci(tmp_path_factory):
  """(out directory, finished process) of `python -m anira_jax.reproduce --scale=ci`, run once per
  session. Add to it, but change nothing it wrote."""
  out = tmp_path_factory.mktemp("reproduce_ci") / "out"
  return out, run_module("anira_jax.reproduce", "--scale=ci", f"--out={out}", timeout=600)
