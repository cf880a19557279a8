"""Multi-process data parallelism through jax.distributed, started by launch/local_multiprocess.sh."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config=configs/sorting.py", "--config.train.steps=20", "--config.train.log_every=10",
        "--config.model.d_model=32", "--config.model.k_max=4", "--config.eval.examples=16",
        "--config.task.eval_sizes=(2,4,8,10)"]


def _last_loss(workdir: pathlib.Path) -> float:
  return json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])["loss"]


def test_two_processes_match_one_process_with_two_devices(tmp_path):
  env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  multi = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", *TINY,
                          f"--workdir={tmp_path / 'multi'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=400)
  assert multi.returncode == 0, multi.stderr[-2000:]
  single = subprocess.run(
      [sys.executable, "-m", "anira_jax.main", *TINY, f"--workdir={tmp_path / 'single'}"],
      cwd=REPO, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
      capture_output=True, text=True, timeout=400)
  assert single.returncode == 0, single.stderr[-2000:]
  a, b = _last_loss(tmp_path / "multi"), _last_loss(tmp_path / "single")
  assert abs(a - b) / abs(b) < 1e-4
  assert (tmp_path / "multi" / "eval.json").exists()
  assert len((tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()) == 2  # one writer


def test_launcher_rejects_missing_process_count():
  result = subprocess.run(["bash", "launch/local_multiprocess.sh", "two"], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.startswith("usage:")
