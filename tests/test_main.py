"""The training command line: bad input gives one short error and leaves runs untouched; a tiny
run writes everything and prints its workdir last."""
import hashlib
import json
import pathlib
import subprocess
import sys

import pytest

from anira_jax import cli
from conftest import REPO, child_env, run_module, stderr_lines, tiny_flags

pytestmark = pytest.mark.xdist_group("test_main")   # one worker: module fixture runs once


CONFIG = "--config=configs/sorting.py"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A tiny successful run through the command line (also the test of one), without --workdir,
  from a directory of its own: (that directory, the finished process)."""
  cwd = tmp_path_factory.mktemp("cli_run")
  proc = subprocess.run(
      [sys.executable, "-m", "anira_jax.main", f"--config={REPO / 'configs' / 'sorting.py'}",
       *tiny_flags(train__steps=5, train__log_every=5)],
      cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300, check=False)
  return cwd, proc


def _workdir(finished_run) -> pathlib.Path:
  """The workdir the run printed last."""
  cwd, proc = finished_run
  assert proc.returncode == 0, proc.stderr
  return cwd / proc.stdout.splitlines()[-1]


def test_tiny_run_writes_everything_and_prints_workdir_last(finished_run):
  workdir = _workdir(finished_run)
  assert "Traceback" not in finished_run[1].stderr
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["variant"] == "anira_o" and config["train"]["steps"] == 5
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics] == [5]
  assert json.loads((workdir / "eval.json").read_text())["step"] == 5
  assert (workdir / "tokens.npz").is_file()
  assert [p.name for p in (workdir / "checkpoints").iterdir()] == ["5"]


def test_a_run_ends_with_its_evaluation_then_its_workdir(finished_run):
  result = json.loads((_workdir(finished_run) / "eval.json").read_text())
  lines = cli.result_lines(result)
  assert len(lines) == 3   # tiny sizes 2, 4, 6
  assert finished_run[1].stdout.splitlines()[-4:-1] == lines


def test_default_workdir_of_a_run_with_overrides_is_its_own(finished_run):
  """Without --workdir, overrides give runs/<config>_<variant>_<hash>, so the plain command does
  not resume a trial run of other overrides."""
  cwd = finished_run[0]
  workdir = str(_workdir(finished_run).relative_to(cwd))
  assert workdir.startswith("runs/sorting_anira_o_") and workdir != "runs/sorting_anira_o"
  assert not (cwd / "runs" / "sorting_anira_o").exists()


def _snapshot(root: pathlib.Path) -> dict:
  return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).digest())
          for p in sorted(root.rglob("*")) if p.is_file()}


BAD = [
    pytest.param(["--config.model.foo=1"], "unknown config key 'model.foo'", id="unknown-key"),
    pytest.param(["--config.train.step=1"], "unknown config key 'train.step'; did you mean "
                 "'train.steps'? (valid keys and their defaults: anira_jax/config.py)",
                 id="unknown-key-close-match"),
    pytest.param(["--config=configs/sorting.py:bogus"],
                 "unknown variant 'bogus'; valid variants: anira_o, anira_e, fixed, transformer",
                 id="unknown-variant"),
    pytest.param(["--config=configs/nonexistent.py"],
                 "config file not found: configs/nonexistent.py", id="missing-config-file"),
    pytest.param(["--config.task.train_sizes=(5,3)"], "min 5 exceeds max 3", id="min-above-max"),
    pytest.param(["--config.task.train_sizes=(0,4)"], "size 0 is below the sorting minimum 1",
                 id="zero-size"),
    pytest.param(["--config.task.eval_sizes=(2,-3,8)"], "size -3 is below the sorting minimum 1",
                 id="negative-size"),
    pytest.param(["--config.task.eval_sizes=(2,4,40)"],
                 "size 40 needs sequence length 80 > model.max_len 64", id="size-above-max-len"),
    pytest.param(["--config.train.batch_size=0"], "train.batch_size must be positive, got 0",
                 id="batch-size-0"),
    pytest.param(["--config.train.batch_size=3"],
                 "train.batch_size 3 is not divisible by the 2 devices", id="batch-not-divisible"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_fails_cleanly_and_touches_nothing(finished_run, extra, message):
  workdir = _workdir(finished_run)
  before = _snapshot(workdir)
  assert before
  args = [CONFIG] + extra if not extra[0].startswith("--config=") else extra
  bad = run_module("anira_jax.main", *args, f"--workdir={workdir}")
  lines = stderr_lines(bad)
  assert bad.returncode != 0
  assert 1 <= len(lines) <= 3, bad.stderr
  assert "Traceback" not in bad.stderr
  assert message in bad.stderr, bad.stderr
  assert _snapshot(workdir) == before


def test_bad_input_creates_no_workdir(tmp_path):
  workdir = tmp_path / "new"
  bad = run_module("anira_jax.main", CONFIG, "--config.train.batch_size=3",
                   f"--workdir={workdir}")
  assert bad.returncode == 2
  assert not workdir.exists()


def test_missing_config_flag():
  bad = run_module("anira_jax.main")
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert len(stderr_lines(bad)) <= 3 and "--config" in bad.stderr
