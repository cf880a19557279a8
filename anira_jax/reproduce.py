"""Reproduces the paper's three findings: trains the runs they need, analyses them, decides each.

python -m anira_jax.reproduce --scale=ci|cpu --out=DIR

Trains configs/<task>.py:<variant> for every task in TASKS, variant in VARIANTS and seed of the
scale, with the scale's overrides, in DIR/runs/<task>/<variant>/seed<k> (finished runs are
skipped, interrupted ones resume), then writes the analysis (DIR/report.md, DIR/analysis.json,
DIR/plots/) and DIR/findings.json: for each finding its measured numbers and whether it holds by
the rules below (docs/design.md, "Findings and the rules that decide them"). `ci` is a tiny smoke
run whose findings mean nothing; `cpu` is the reproduction, sized for an hour on 2 CPU cores.
"""
import dataclasses
import json
import os
import shlex
import sys
import time

from absl import flags
import ml_collections
import tqdm

from anira_jax import analyze, cli, sweep

TASKS = ("sorting", "graph")
VARIANTS = ("anira_e", "anira_o", "fixed")


@dataclasses.dataclass(frozen=True)
class Scale:
  seeds: tuple[int, ...]
  overrides: tuple[str, ...]                     # key=value for every run
  task_overrides: dict[str, tuple[str, ...]]     # and for the runs of one task


_NO_INTERMEDIATE_EVAL = "train.eval_every=1000000"
SCALES = {
    "ci": Scale(
        seeds=(0,),
        overrides=("model.d_model=16", "model.num_heads=2", "model.mlp_ratio=2", "model.k_max=4",
                   "halting.bias_init=1.0", "halting.threshold=0.1", "train.steps=30",
                   "train.batch_size=8", "train.warmup_steps=10", "train.log_every=10",
                   _NO_INTERMEDIATE_EVAL, "eval.examples=16"),
        task_overrides={"sorting": ("task.train_sizes=(2,4)", "task.eval_sizes=(2,4,6)"),
                        "graph": ("task.train_sizes=(3,4)", "task.eval_sizes=(3,4,6)")}),
    "cpu": Scale(
        seeds=(0, 1, 2),
        overrides=(_NO_INTERMEDIATE_EVAL, "eval.examples=128"),
        task_overrides={"sorting": ("train.steps=800",), "graph": ("train.steps=500",)}),
}

# The rules. Numbers are means over seeds; see docs/design.md.
ALIGNMENT_MIN_RHO = 0.3
OOD_ACCURACY_RATIO = 0.5
LEARNED_ACCURACY = 0.5   # in-distribution sequence accuracy below which nothing was learned
RULES = {
    "alignment": (f"For every task, Spearman(depth, the task's main execution feature) of anira_o "
                  f"on in-distribution answer tokens is at least {ALIGNMENT_MIN_RHO}; no "
                  "difficulty label enters training."),
    "no_extrapolation": ("For every task and for anira_o and anira_e, the in-distribution "
                         f"sequence accuracy is at least {LEARNED_ACCURACY} (the training range "
                         "was learned), the sequence accuracy out "
                         f"of distribution is at most {OOD_ACCURACY_RATIO} times the one in "
                         "distribution, while the mean depth out of distribution is at least the "
                         "one in distribution (each averaged over the sizes of its range)."),
    "decision_timing": ("On graph, R² of depth on the structural features alone is higher for "
                        "anira_e than for anira_o, and the R² the execution features add over the "
                        "structural ones is higher for anira_o than for anira_e."),
}


def config(scale: str, task: str, variant: str, seed: int) -> ml_collections.ConfigDict:
  s = SCALES[scale]
  return sweep.config_for(task, variant, seed, s.overrides + s.task_overrides.get(task, ()))


def train_runs(scale: str, root: str) -> list[str]:
  """Trains every run of the scale under root/<task>/<variant>/seed<k>, skipping finished ones;
  returns their directories."""
  cells = [(t, v, s) for t in TASKS for v in VARIANTS for s in SCALES[scale].seeds]
  workdirs = []
  bar = tqdm.tqdm(cells, unit="run", dynamic_ncols=True,
                  disable=not sys.stderr.isatty() or bool(os.environ.get("CI")))
  for i, (task, variant, seed) in enumerate(bar, 1):
    name = f"{task}/{variant}/seed{seed}"
    bar.set_description(name)
    workdir = os.path.join(root, task, variant, f"seed{seed}")
    cfg, tick = config(scale, task, variant, seed), time.perf_counter()
    done = sweep.finished_eval(workdir, cfg.train.steps)
    sweep.train_unless_done(cfg, workdir)
    bar.write(f"run {i}/{len(cells)} {name}: "
              f"{'finished earlier' if done else f'trained in {time.perf_counter() - tick:.0f} s'}")
    workdirs.append(workdir)
  bar.close()
  return workdirs


def alignment(groups: dict[str, dict]) -> dict:
  rho = {}
  for task in sorted({g["task"] for g in groups.values()}):
    g = groups[f"{task}/anira_o"]
    rho[task] = {"feature": g["main_feature"],
                 "spearman": g["spearman"][g["main_feature"]]["rho"]["mean"]}
  return {"anira_o": rho, "min_spearman": ALIGNMENT_MIN_RHO,
          "holds": all(r["spearman"] >= ALIGNMENT_MIN_RHO for r in rho.values())}


def no_extrapolation(groups: dict[str, dict]) -> dict:
  cases = {}
  for key, g in sorted(groups.items()):
    if g["variant"] not in ("anira_o", "anira_e"):
      continue
    inside, outside = g["in_distribution"], g["out_of_distribution"]
    case = {"sequence_accuracy_in": inside["sequence_accuracy"]["mean"],
            "sequence_accuracy_out": outside["sequence_accuracy"]["mean"],
            "mean_depth_in": inside["mean_depth"]["mean"],
            "mean_depth_out": outside["mean_depth"]["mean"]}
    case["holds"] = (
        case["sequence_accuracy_in"] >= LEARNED_ACCURACY
        and case["sequence_accuracy_out"] <= OOD_ACCURACY_RATIO * case["sequence_accuracy_in"]
        and case["mean_depth_out"] >= case["mean_depth_in"])
    cases[key] = case
  return {**cases, "holds": bool(cases) and all(c["holds"] for c in cases.values())}


def decision_timing(groups: dict[str, dict]) -> dict:
  r2 = {v: {k: groups[f"graph/{v}"]["regression"][k]["mean"]
            for k in ("r2_structural", "r2_execution", "r2_execution_added")}
        for v in ("anira_e", "anira_o")}
  return {"graph": r2, "holds": (r2["anira_e"]["r2_structural"] > r2["anira_o"]["r2_structural"]
                                 and r2["anira_o"]["r2_execution_added"]
                                 > r2["anira_e"]["r2_execution_added"])}


def findings(groups: dict[str, dict]) -> dict:
  """Each finding's numbers, its rule and whether it holds, from analyze's groups."""
  return {name: {"rule": RULES[name], **rule(groups)}
          for name, rule in (("alignment", alignment), ("no_extrapolation", no_extrapolation),
                             ("decision_timing", decision_timing))}


def _rows(tree: dict, prefix: str = "") -> list[str]:
  """Markdown table rows `| path | value |` of a finding's numbers."""
  rows = []
  for key, value in tree.items():
    if isinstance(value, dict):
      rows += _rows(value, f"{prefix}{key}.")
    elif key != "rule" and (prefix or key != "holds"):
      rows.append(f"| {prefix}{key} | {value:.3f} |" if isinstance(value, float)
                  else f"| {prefix}{key} | {value} |")
  return rows


def findings_markdown(found: dict) -> str:
  lines = ["", "## Findings", ""]
  for name, f in found.items():
    lines += [f"### {name}: {'holds' if f['holds'] else 'does not hold'}", "", f"Rule: {f['rule']}",
              "", "| measured | value |", "| --- | --- |", *_rows(f), ""]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  command = shlex.join(["python", "-m", "anira_jax.reproduce", *sys.argv[1:]])
  start = time.perf_counter()
  workdirs = train_runs(_SCALE.value, os.path.join(_OUT.value, "runs"))
  trained = time.perf_counter() - start
  result = {"machine": analyze.machine(), **analyze.analyze(workdirs)}
  found = findings(result["groups"])
  with open(os.path.join(_OUT.value, "findings.json"), "w") as f:
    json.dump(found, f, indent=1)
  head = analyze.header("Reproduction", command) + (
      f"\nThe {len(workdirs)} runs took {trained:.0f} s to train (or to find finished).\n"
      + findings_markdown(found))
  analyze.write(_OUT.value, result, head)
  print(f"analysis took {time.perf_counter() - start - trained:.0f} s")
  print(os.path.join(_OUT.value, "findings.json"))


if __name__ == "__main__":
  _SCALE = flags.DEFINE_enum("scale", None, list(SCALES), "ci: tiny smoke run; cpu: the "
                             "reproduction on 2 CPU cores.", required=True)
  _OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
  cli.run(main)
