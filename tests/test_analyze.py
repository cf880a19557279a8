"""analyze.py: the numbers of hand-made runs with known correlations, the report and its plots,
and one-line errors for workdirs without evaluation records."""
import json
import pathlib
import shutil

import numpy as np
import pytest

from anira_jax import analyze, checkpoint, evaluate
from anira_jax.errors import UserError
from conftest import run_module, stderr_lines, tiny_config

pytestmark = pytest.mark.xdist_group("test_analyze")   # one worker: module fixture runs once


TRAIN_SIZES = (2, 4)             # tiny_config's; size 6 is out of distribution
SEQ_ACC = {0: {2: 1.0, 4: 0.8, 6: 0.1}, 1: {2: 0.8, 4: 0.6, 6: 0.3}}


def _records(depth_of_remaining, examples: int = 3) -> dict[str, np.ndarray]:
  """Sorting-like token records for sizes 2, 4, 6: answer token j of size n has remaining n - j."""
  rows = {}
  for size in (2, 4, 6):
    for example in range(examples):
      for j in range(size):
        remaining = size - j
        depth = depth_of_remaining(remaining)
        columns = {"size": size, "example": example, "position": size + j,
                   "depth": depth, "correct": True, "needed_depth": min(depth, 2),
                   "in_distribution": TRAIN_SIZES[0] <= size <= TRAIN_SIZES[1],
                   "feature/size": size, "feature/multiplicity": 1 + j % 2,
                   "feature/remaining": remaining, "feature/gap": j % 3, "feature/repeat": 0}
        for k, v in columns.items():
          rows.setdefault(k, []).append(v)
  return {k: np.array(v, np.int32 if k in ("depth", "needed_depth") else None)
          for k, v in rows.items()}


def _eval(records: dict, seed: int, variant: str) -> dict:
  return {"step": 30, "task": "sorting", "variant": variant,
          "alignment": {"spearman_needed": 0.5, "spearman_main": 0.25, "main_feature": "remaining"},
          "sizes": {str(size): {
      "token_accuracy": 1.0, "sequence_accuracy": SEQ_ACC[seed][size],
      **evaluate.depth_summary(records["depth"], records["size"] == size, 4),
      "forced_token_accuracy": [1.0] * 4,
      "forced_sequence_accuracy": [SEQ_ACC[seed][size] * k / 4 for k in range(1, 5)],
      "in_distribution": TRAIN_SIZES[0] <= size <= TRAIN_SIZES[1]} for size in (2, 4, 6)}}


def _run(variant: str, seed: int, depth_of_remaining) -> dict:
  records = _records(depth_of_remaining)
  return {"workdir": f"{variant}/seed{seed}", "config": tiny_config(variant, seed=seed),
          "eval": _eval(records, seed, variant), "records": records, "evals": []}


def _write(root, run: dict) -> str:
  workdir = root / run["workdir"]
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(run["config"].to_json())
  result = dict(run["eval"])
  evaluate.write(str(workdir), result.pop("step"), result, run["records"])
  return str(workdir)


FOLLOWS = lambda remaining: remaining           # Spearman(depth, remaining) = +1
OPPOSES = lambda remaining: 7 - remaining       # -1
CONSTANT = lambda remaining: 4                  # what fixed and transformer do


def test_group_over_seeds_known_numbers():
  g = analyze.group_summary([_run("anira_o", 0, FOLLOWS), _run("anira_o", 1, OPPOSES)])
  assert (g["task"], g["variant"], g["adaptive"]) == ("sorting", "anira_o", True)
  assert g["seeds"] == [0, 1]
  # Per size and per range: mean and std over the two seeds.
  assert g["sizes"]["2"]["sequence_accuracy"] == pytest.approx({"mean": 0.9, "std": 0.1})
  assert g["sizes"]["6"]["in_distribution"] is False
  assert g["in_distribution"]["sequence_accuracy"] == pytest.approx({"mean": 0.8, "std": 0.1})
  assert g["out_of_distribution"]["sequence_accuracy"] == pytest.approx({"mean": 0.2, "std": 0.1})
  # rho = +1 and -1: mean 0, std 1, and every bootstrap draw of the mean is exactly 0.
  remaining = g["spearman"]["remaining"]
  assert remaining["kind"] == "execution"
  assert remaining["per_seed"] == pytest.approx([1.0, -1.0])
  assert remaining["rho"] == pytest.approx({"mean": 0.0, "std": 1.0})
  assert remaining["ci95"] == pytest.approx([0.0, 0.0])
  assert g["spearman"]["repeat"]["rho"] == {"mean": 0.0, "std": 0.0}   # constant feature
  # Depth is exactly linear in remaining in both runs.
  assert g["regression"]["r2_execution"]["mean"] == pytest.approx(1.0)
  assert g["regression"]["r2_both"]["mean"] == pytest.approx(1.0)
  # Needed depth min(depth, 2): the waste is what lies above 2; in-distribution sizes 2, 4.
  n = g["needed"]
  depths = [[r for size in (2, 4) for _ in range(3) for r in range(size, 0, -1)],
            [7 - r for size in (2, 4) for _ in range(3) for r in range(size, 0, -1)]]
  waste = [np.mean([d - min(d, 2) for d in ds]) for ds in depths]
  assert n["waste"] == pytest.approx({"mean": np.mean(waste), "std": np.std(waste)})
  assert n["unmatched"] == {"mean": 0.0, "std": 0.0}
  # Forced accuracy: mean over the in-distribution sizes, then over seeds.
  assert n["forced_sequence_accuracy"]["mean"] == pytest.approx([0.8 * k / 4 for k in range(1, 5)])


def test_single_run_alignment_and_depth_tables():
  g = analyze.group_summary([_run("anira_o", 0, FOLLOWS)])
  rho, low, high = g["spearman"]["remaining"]["rho"]["mean"], *g["spearman"]["remaining"]["ci95"]
  assert rho == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)
  r2 = {k: v["mean"] for k, v in g["regression"].items()}
  assert r2["r2_execution_added"] == pytest.approx(1.0 - r2["r2_structural"])
  assert 0.0 < r2["r2_structural"] < 0.5
  # In distribution (sizes 2 and 4, 3 examples each), remaining 1..4 occurs 6, 6, 3, 3 times.
  table = g["depth_by_feature"]
  assert table["feature"] == "remaining" and table["values"] == [1, 2, 3, 4]
  assert table["mean"] == [1.0, 2.0, 3.0, 4.0] and table["count"] == [6, 6, 3, 3]
  assert table["sem"] == [0.0] * 4
  assert g["depth_hist"]["in_distribution"] == pytest.approx([1 / 3, 1 / 3, 1 / 6, 1 / 6], abs=1e-5)
  # Out of distribution (size 6) remaining runs to 6; depth above k_max = 4 is not a depth bin.
  assert sum(g["depth_hist"]["out_of_distribution"]) == pytest.approx(4 / 6, abs=1e-5)


def test_constant_depth_has_zero_alignment():
  g = analyze.group_summary([_run("fixed", 0, CONSTANT), _run("fixed", 1, CONSTANT)])
  assert g["adaptive"] is False
  for stats in g["spearman"].values():
    assert stats["rho"] == {"mean": 0.0, "std": 0.0} and stats["ci95"] == [0.0, 0.0]
  assert all(v == {"mean": 0.0, "std": 0.0} for v in g["regression"].values())
  assert g["depth_hist"]["in_distribution"] == [0.0, 0.0, 0.0, 1.0]
  assert g["label"] == "fixed_k4"
  text = analyze.markdown({"groups": {"sorting/fixed_k4": g}}, [])
  assert "| remaining (main) | execution | 0 (constant) |" in text
  assert "| fixed_k4 | 4.00 | 2.00, 0.00 | 2.00 | 0 (constant) | 0.000 |" in text


def test_runs_of_one_group_must_share_sizes():
  first, other = _run("anira_o", 0, FOLLOWS), _run("anira_o", 1, FOLLOWS)
  other["config"].task.train_sizes = (2, 3)
  with pytest.raises(UserError, match=r"not pooled: .*task.train_sizes \[2, 4\] vs \[2, 3\]"):
    analyze.check_runs({"sorting/anira_o": [first, other]})


def test_runs_differing_in_more_than_the_seed_are_not_pooled(tmp_path):
  short = _run("anira_o", 0, FOLLOWS)
  long = _run("anira_o", 1, FOLLOWS)
  long["config"].train.steps, long["config"].train.log_every = 60, 7   # log_every may differ
  workdirs = [_write(tmp_path, short), _write(tmp_path, long)]
  with pytest.raises(UserError) as e:
    analyze.analyze(workdirs, resamples=2)
  assert str(e.value) == (
      f"runs of sorting/anira_o differ in more than the seed, so they are not pooled: "
      f"{workdirs[0]} vs {workdirs[1]}: train.schedule_steps 30 vs 60, train.steps 30 vs 60; "
      "analyse them in separate commands")


def test_eval_older_than_the_latest_checkpoint_is_warned_about(tmp_path, capsys):
  fresh, stale = _run("anira_o", 0, FOLLOWS), _run("anira_o", 1, FOLLOWS)
  stale["config"].train.log_every = 5
  workdirs = [_write(tmp_path, fresh), _write(tmp_path, stale)]
  for workdir, step in zip(workdirs, (30, 40)):
    mngr = checkpoint.manager(workdir)
    checkpoint.save(mngr, step, {"x": np.zeros(2)})
    mngr.wait_until_finished()
  result = analyze.analyze(workdirs, resamples=2)
  assert result["groups"]["sorting/anira_o"]["seeds"] == [0, 1]
  assert capsys.readouterr().err == (
      f"warning: {workdirs[1]}/eval.json is of step 30, its latest checkpoint of step 40; "
      f"python -m anira_jax.evaluate --workdir={workdirs[1]} updates it\n")


@pytest.fixture(name="written_runs", scope="module")
def written_runs_fixture(tmp_path_factory):
  root = tmp_path_factory.mktemp("analyze_runs")
  return [_write(root, _run(v, s, fn)) for v, fn in (("anira_o", FOLLOWS), ("fixed", CONSTANT))
          for s in (0, 1)]


def test_cli_writes_report_json_and_plots(tmp_path, written_runs):
  out = tmp_path / "out"
  proc = run_module("anira_jax.analyze", f"--out={out}", "--workdirs", *written_runs)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == str(out / "report.md")
  result = json.loads((out / "analysis.json").read_text())
  assert set(result["groups"]) == {"sorting/anira_o", "sorting/fixed_k4"}
  assert result["groups"]["sorting/anira_o"]["seeds"] == [0, 1]
  assert result["machine"]["cpus"] >= 1
  report = (out / "report.md").read_text()
  assert f"`python -m anira_jax.analyze --out={out} --workdirs " in report
  for section in ("## Runs", "## sorting", "### Accuracy and depth per size",
                  "### Spearman(depth, feature)", "### R² of depth", "### Needed depth",
                  "## Plots"):
    assert section in report, section
  assert "| anira_o | 6 | **out** |" in report
  names = {"sorting_accuracy.png", "sorting_depth.png", "sorting_depth_vs_remaining.png",
           "sorting_r2.png", "sorting_depth_hist.png", "sorting_accuracy_vs_compute.png",
           "sorting_forced_depth.png", "sorting_needed_depth.png",
           "sorting_alignment_over_training.png"}
  assert {p.name for p in (out / "plots").iterdir()} == names
  for name in names:
    png = (out / "plots" / name).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
    assert f"(plots/{name})" in report


@pytest.mark.parametrize("case", ["missing_dir", "missing_tokens"])
def test_cli_bad_workdir_exits_2_with_one_line(tmp_path, written_runs, case):
  if case == "missing_dir":
    workdir, expected = tmp_path / "nope", "does not exist"
  else:
    workdir = tmp_path / "no_tokens"
    workdir.mkdir()
    for name in ("config.json", "eval.json"):
      shutil.copy(pathlib.Path(written_runs[0], name), workdir)
    expected = (f"is missing tokens.npz; write it with "
                f"python -m anira_jax.evaluate --workdir={workdir}")
  proc = run_module("anira_jax.analyze", f"--out={tmp_path / 'out'}",
                    f"--workdirs={written_runs[0]},{workdir}")
  assert proc.returncode == 2
  lines = stderr_lines(proc)
  assert len(lines) == 1 and expected in lines[0], proc.stderr
  assert not (tmp_path / "out").exists()
