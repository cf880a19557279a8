"""launch/: multi-process data parallelism through jax.distributed (local_multiprocess.sh), the
cluster scripts and the sweep launcher."""
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import chex
import jax
import pytest

from anira_jax import checkpoint, cli, config as config_lib, optimizer, runs, train
from conftest import TINY, child_env, tiny_config, tiny_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--config=configs/sorting.py", *tiny_flags(train__log_every=5)]


def _processes(launcher: subprocess.Popen) -> dict[int, int]:
  """process_id -> pid of the anira_jax.main children of a local_multiprocess.sh."""
  found = {}
  for _ in range(100):
    children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    for pid in map(int, children):
      args = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
      found.update({int(a.split(b"=")[1]): pid for a in args
                    if a.startswith(b"--config.parallel.process_id=")})
    if len(found) == 2:
      return found
    time.sleep(0.1)
  raise AssertionError(f"children of the launcher not found: {found}")


def _launch(*args: str) -> subprocess.Popen:
  env = {**child_env(), "PYTHON": sys.executable}
  return subprocess.Popen(["bash", "launch/local_multiprocess.sh", "2", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)   # its own group: the finally kills them all


def _state(workdir: pathlib.Path) -> dict:
  cfg = runs.load_config(str(workdir))
  like = jax.eval_shape(lambda: optimizer.init_state(cfg, config_lib.validate(cfg)))
  return checkpoint.restore(checkpoint.manager(str(workdir), create=False), like)


def test_two_processes_signalled_apart_save_one_agreed_step_and_resume_bitwise(tmp_path):
  """Process 0 gets Ctrl-C, process 1 SIGTERM a moment later: both save the same step and exit
  75; the same command with a few more steps then ends bitwise where an unstopped run of one
  process with two devices (this one: conftest's) does. The steps stay inside the warm-up, where
  the LR schedule does not depend on train.steps; with two devices a gradient mean adds the same
  two numbers whichever process holds each, so the process boundary changes no bit."""
  stopped_dir = tmp_path / "stopped"
  launcher = _launch(*TINY_FLAGS, "--config.train.steps=100000", f"--workdir={stopped_dir}")
  try:
    lines = iter(launcher.stdout.readline, "")
    assert any(line.startswith("step ") for line in lines), launcher.stderr.read()[-2000:]
    pids = _processes(launcher)
    os.kill(pids[0], signal.SIGINT)
    time.sleep(0.3)
    os.kill(pids[1], signal.SIGTERM)
    out, err = launcher.communicate(timeout=300)
  finally:
    if launcher.poll() is None:
      os.killpg(launcher.pid, signal.SIGKILL)
      launcher.wait()
  assert launcher.returncode == cli.EXIT_REQUEUE, err[-2000:]
  assert "Traceback" not in err
  stopped = [l for l in out.splitlines() if l.startswith("stopped by signal ")]
  assert len(stopped) == 1, out   # printed by process 0 only
  step = int(stopped[0].split(" at step ")[1].split(";")[0])
  assert step + 3 <= TINY["train.warmup_steps"]
  saved = sorted(int(p.name) for p in (stopped_dir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [step], saved   # one checkpoint, of the agreed step

  proc = _launch(*TINY_FLAGS, f"--config.train.steps={step + 3}", f"--workdir={stopped_dir}")
  out, err = proc.communicate(timeout=400)
  assert proc.returncode == 0, err[-2000:]
  assert f"resuming from step {step}" in out, out
  single = tmp_path / "single"
  train.train_and_evaluate(tiny_config(train__steps=step + 3, train__log_every=5), str(single))
  a, b = _state(stopped_dir), _state(single)
  assert int(a["step"]) == int(b["step"]) == step + 3
  chex.assert_trees_all_equal(a, b)
  logged = lambda w: [json.loads(l) for l in (w / "metrics.jsonl").read_text().splitlines()]
  multi, one = logged(stopped_dir), logged(single)
  assert [m["step"] for m in multi] == [m["step"] for m in one]   # process 0 alone writes
  assert multi[-1]["loss"] == one[-1]["loss"]
  assert (stopped_dir / "eval.json").exists()


def test_launcher_rejects_missing_process_count():
  result = subprocess.run(["bash", "launch/local_multiprocess.sh", "two"], check=False,
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.startswith("usage:")


# Cluster scripts and the sweep launcher: command generation only (nothing is trained). -------

def _run(cmd: list[str], **env) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, check=False, cwd=REPO, env={**os.environ, **env},
                        capture_output=True, text=True, timeout=120)


def _sweep(*args: str, **env) -> subprocess.CompletedProcess:
  return _run([sys.executable, "launch/sweep.py", *args], **env)


@pytest.mark.parametrize("script", ["local_multiprocess.sh", "tpu_pod.sh", "slurm_gpu.sbatch"])
def test_shell_scripts_parse(script):
  assert _run(["bash", "-n", f"launch/{script}"]).returncode == 0


def test_tpu_pod_runs_main_on_every_worker_with_auto_distributed():
  result = _run(["bash", "launch/tpu_pod.sh", "my-v4-32", "us-central2-b",
                 "--config=configs/sorting.py", "--workdir=/mnt/shared/a b"], DRY_RUN="1",
                PROJECT="proj")
  assert result.returncode == 0, result.stderr
  cmd = shlex.split(result.stdout)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4-32"]
  assert {"--zone=us-central2-b", "--worker=all", "--project=proj"} <= set(cmd)
  remote = shlex.split(next(a for a in cmd if a.startswith("--command="))[len("--command="):])
  assert remote == ["cd", "~/anira_jax", "&&", "python3", "-m", "anira_jax.main",
                    "--config=configs/sorting.py", "--workdir=/mnt/shared/a b",
                    "--config.parallel.distributed=auto"]


def test_slurm_script_sruns_main_with_auto_distributed(tmp_path):
  fake_srun = tmp_path / "srun"
  fake_srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
  fake_srun.chmod(0o755)
  result = _run(["bash", "launch/slurm_gpu.sbatch", "--config=configs/sorting.py:fixed",
                 "--workdir=/shared/x"], PATH=f"{tmp_path}:{os.environ['PATH']}", PYTHON="py")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      "--kill-on-bad-exit=1", "py", "-m", "anira_jax.main", "--config=configs/sorting.py:fixed",
      "--workdir=/shared/x", "--config.parallel.distributed=auto"]


@pytest.mark.parametrize("status,requeued", [(75, True), (0, False), (1, False)])
def test_slurm_script_requeues_a_run_stopped_after_a_checkpoint(tmp_path, status, requeued):
  log = tmp_path / "scontrol.log"
  (tmp_path / "srun").write_text(f"#!/usr/bin/env bash\nexit {status}\n")
  (tmp_path / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
  for name in ("srun", "scontrol"):
    (tmp_path / name).chmod(0o755)
  result = _run(["bash", "launch/slurm_gpu.sbatch", "--config=configs/sorting.py"],
                PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_JOB_ID="4242")
  assert result.returncode == status
  assert (log.read_text().splitlines() if log.exists() else []) == (
      ["requeue 4242"] if requeued else [])
  script = (REPO / "launch" / "slurm_gpu.sbatch").read_text()
  assert "#SBATCH --requeue" in script and "#SBATCH --signal=TERM@" in script


def test_sweep_dry_run_prints_one_command_per_config_variant_and_seed():
  result = _sweep("--configs=configs/sorting.py,configs/dyck.py", "--variants=anira_o,fixed",
                  "--seeds=0,3", "--root=/tmp/sweep", "--python=py", "--dry_run", "--",
                  "--config.train.steps=7", "--config.task.eval_sizes=(2,4)")
  assert result.returncode == 0, result.stderr
  cmds = [shlex.split(line) for line in result.stdout.splitlines()]
  assert len(cmds) == 8
  assert cmds[0] == ["py", "-m", "anira_jax.main", "--config=configs/sorting.py:anira_o",
                     "--config.seed=0", "--workdir=/tmp/sweep/sorting_anira_o_seed0",
                     "--config.train.steps=7", "--config.task.eval_sizes=(2,4)"]
  runs = {(c[3], c[4]) for c in cmds}
  assert runs == {(f"--config=configs/{task}.py:{variant}", f"--config.seed={seed}")
                  for task in ("sorting", "dyck") for variant in ("anira_o", "fixed")
                  for seed in (0, 3)}
  assert len({c[5] for c in cmds}) == 8   # one workdir per run


def test_sweep_submits_each_run_with_sbatch():
  result = _sweep("--variants=anira_e", "--seeds=1,2", "--submit=sbatch",
                  "--sbatch_args=--nodes=4 --time=1:00:00", "--dry_run")
  assert result.returncode == 0, result.stderr
  cmds = [shlex.split(line) for line in result.stdout.splitlines()]
  assert [c[:4] for c in cmds] == [["sbatch", f"--job-name=sorting_anira_e_seed{s}", "--nodes=4",
                                    "--time=1:00:00"] for s in (1, 2)]
  assert all(c[4] == str(REPO / "launch" / "slurm_gpu.sbatch") for c in cmds)
  assert cmds[1][5:] == ["--config=configs/sorting.py:anira_e", "--config.seed=2",
                         "--workdir=runs/sweep/sorting_anira_e_seed2"]


def test_sweep_runs_locally_in_order_and_stops_at_the_first_failure(tmp_path):
  log = tmp_path / "log"
  fake_python = tmp_path / "python"
  fake_python.write_text(f'#!/usr/bin/env bash\necho "$5" >> {log}\n[[ "$5" != *seed1 ]]\n')
  fake_python.chmod(0o755)
  result = _sweep("--seeds=0,1,2", f"--python={fake_python}", f"--root={tmp_path}")
  assert result.returncode == 1
  assert log.read_text().splitlines() == [f"--workdir={tmp_path}/sorting_anira_o_seed0",
                                          f"--workdir={tmp_path}/sorting_anira_o_seed1"]


@pytest.mark.parametrize("args,message", [
    (["--variants=anira_o,bogus"], "unknown variant 'bogus'"),
    (["--configs=configs/nope.py"], "config file not found: configs/nope.py"),
    (["--seeds=0,x"], "--seeds must be integers"),
])
def test_sweep_rejects_bad_input(args, message):
  result = _sweep(*args, "--dry_run")
  assert result.returncode == 2
  assert message in result.stderr and not result.stdout
