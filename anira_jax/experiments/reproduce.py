"""Reproduces the paper's three findings on the depth-necessary families, and decides the rules
on needed depth added after the first reproduction.

python -m anira_jax.reproduce --scale=ci|cpu --out=DIR

Trains configs/<task>.py for every task in TASKS, the adaptive variants and the fixed baseline at
depths FIXED_DEPTHS and k_max, and every seed of the scale, with the scale's overrides, in
DIR/runs/<task>/<label>/seed<k> (label: anira_o, anira_e, fixed_k<k>; finished runs are skipped,
interrupted ones resume), then writes the analysis (DIR/report.md, DIR/analysis.json,
DIR/plots/) and DIR/findings.json: for each finding its measured numbers and whether it holds by
the rules below (docs/design.md, "Findings and the rules that decide them"). `ci` is a tiny smoke
run whose findings mean nothing; `cpu` is the reproduction, sized for an hour on 2 CPU cores.
"""
from collections.abc import Callable
import dataclasses
import json
import os
import shlex
import sys
import time

from absl import flags
import ml_collections
import numpy as np
import tqdm

from anira_jax import analyze, model, plots
from anira_jax.experiments import runner

FLAGS = flags.FLAGS   # defined by the command line, anira_jax/reproduce.py

TASKS = ("graph", "modarith")   # the depth-necessary families (docs/design.md)
ADAPTIVE = tuple(sorted(name for name, v in model.VARIANTS.items() if v.adaptive))
FIXED_DEPTHS = (1, 2, 4)         # the fixed baseline is also trained at the config's k_max


@dataclasses.dataclass(frozen=True)
class Scale:
  seeds: tuple[int, ...]
  overrides: tuple[str, ...]                     # key=value for every run
  task_overrides: dict[str, tuple[str, ...]]     # and for the runs of one task
  adaptive_overrides: tuple[str, ...]            # and for the adaptive runs (their evaluations)
  curve_seeds: tuple[int, ...]                   # seeds of the fixed baselines below k_max


# The halting of every run: the one measured best on the depth-necessary graph config by waste
# and accuracy (docs/design.md, run F): the median rule, a normalised halting input, the penalty
# on answer tokens only, the input re-injected at every iteration (for the fixed baselines too).
HALTING = ("halting.threshold=0.5", "halting.input_norm=True", "halting.penalty_tokens=answer",
           "model.input_injection=True")
_FINAL_EVAL_ONLY = "train.eval_every=1000000"
SCALES = {
    "ci": Scale(
        seeds=(0,),
        overrides=HALTING + (
            "model.d_model=16", "model.num_heads=2", "model.mlp_ratio=2", "model.k_max=4",
            "halting.bias_init=-1.0", "train.steps=30", "train.batch_size=8",
            "train.warmup_steps=10", "train.log_every=10", _FINAL_EVAL_ONLY,
            "eval.examples=16", "eval.generation=False"),
        task_overrides={"graph": ("task.train_sizes=(3,4)", "task.eval_sizes=(3,4,6)",
                                  "model.max_len=48"),
                        "modarith": ("task.train_sizes=(1,2)", "task.eval_sizes=(1,2,3)")},
        adaptive_overrides=("train.eval_every=20",), curve_seeds=(0,)),
    "cpu": Scale(
        seeds=(0, 1, 2),
        overrides=HALTING + ("train.batch_size=32", _FINAL_EVAL_ONLY, "eval.examples=128"),
        task_overrides={"graph": ("train.steps=1200",), "modarith": ("train.steps=2500",)},
        adaptive_overrides=("train.eval_every=300",), curve_seeds=(0,)),
}

# The rules. Numbers are means over seeds; see docs/design.md.
ALIGNMENT_MIN_RHO = 0.3
OOD_ACCURACY_RATIO = 0.5
LEARNED_ACCURACY = 0.5   # in-distribution sequence accuracy below which nothing was learned
NEEDED_MIN_RHO = 0.4
ADDED = "(Added after the first reproduction.) "
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
    "needed_alignment": (
        f"{ADDED}For every task, Spearman(depth, needed depth) of anira_o on in-distribution "
        f"answer tokens is at least {NEEDED_MIN_RHO}, and anira_o's mean depth rises with the "
        "difficulty parameter in distribution (higher at the largest in-distribution evaluation "
        "size than at the smallest)."),
    "needed_no_extrapolation": (
        f"{ADDED}For every task and for anira_o and anira_e, the in-distribution sequence "
        f"accuracy is at least {LEARNED_ACCURACY}, and out of distribution no depth rescues it: "
        "the best sequence accuracy over forced depths k = 1..K is at most "
        f"{OOD_ACCURACY_RATIO} times the in-distribution one, while the own mean depth out of "
        "distribution is at least the one in distribution."),
    "needed_decision_timing": (
        f"{ADDED}On every task, R² of depth on the structural features is higher for anira_e "
        "than for anira_o, the R² the execution features add is higher for anira_o, and anira_o's "
        "depth follows needed depth more closely (higher Spearman(depth, needed depth)) than "
        "anira_e's."),
    "allocation_pays": (
        f"{ADDED}Not one of the paper's findings: whether adaptive depth buys accuracy. Per task "
        "and adaptive variant, its in-distribution sequence accuracy is above the fixed-depth "
        "curve (the fixed baseline trained at k = 1, 2, 4 and k_max, linearly interpolated) at "
        "its own in-distribution mean depth. Holds when it does for anira_o on every task."),
}


Arm = tuple[str, tuple[str, ...], tuple[int, ...]]   # variant, overrides, seeds


def arms(scale: str, task: str) -> list[Arm]:
  """(variant, overrides, seeds) of the runs of a task: the adaptive variants (evaluated during
  training too, for the alignment over training) and the fixed baseline at k_max, with every
  seed of the scale; the fixed baseline at each of FIXED_DEPTHS below k_max, the rest of the
  accuracy-against-compute curve, with the scale's curve seeds."""
  s = SCALES[scale]
  k_max = config(scale, task, "fixed", 0).model.k_max
  return [(v, s.adaptive_overrides, s.seeds) for v in ADAPTIVE] + [
      ("fixed", (f"model.k_max={k}",), s.seeds if k == k_max else s.curve_seeds)
      for k in sorted({*FIXED_DEPTHS, k_max}) if k <= k_max]


def config(scale: str, task: str, variant: str, seed: int,
           overrides: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  s = SCALES[scale]
  return runner.config_for(task, variant, seed,
                          s.overrides + s.task_overrides.get(task, ()) + overrides)


def train_runs(scale: str, root: str) -> list[str]:
  """Trains every run of the scale under root/<task>/<label>/seed<k> (label: analyze.label,
  e.g. fixed_k2), skipping finished ones; returns their directories."""
  cells = [(t, v, o, s) for t in TASKS for v, o, seeds in arms(scale, t) for s in seeds]
  workdirs = []
  bar = tqdm.tqdm(cells, unit="run", dynamic_ncols=True,
                  disable=not sys.stderr.isatty() or bool(os.environ.get("CI")))
  for i, (task, variant, overrides, seed) in enumerate(bar, 1):
    cfg, tick = config(scale, task, variant, seed, overrides), time.perf_counter()
    name = f"{task}/{analyze.label(cfg)}/seed{seed}"
    bar.set_description(name)
    workdir = os.path.join(root, name)
    done = runner.finished_eval(workdir, cfg.train.steps)
    runner.train_unless_done(cfg, workdir)
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
  return _collapses(groups, "sequence_accuracy_out",
                    lambda g: _range_mean(g, "out_of_distribution", "sequence_accuracy"))


def decision_timing(groups: dict[str, dict]) -> dict:
  r2 = {v: {k: groups[f"graph/{v}"]["regression"][k]["mean"]
            for k in ("r2_structural", "r2_execution", "r2_execution_added")}
        for v in ("anira_e", "anira_o")}
  return {"graph": r2, "holds": _timing_holds(r2)}


def _timing_holds(r2: dict[str, dict]) -> bool:
  """anira_e's depth leans more on the structural features, anira_o's gains more from the
  execution ones (R² means by variant)."""
  o, e = r2["anira_o"], r2["anira_e"]
  return (e["r2_structural"] > o["r2_structural"]
          and o["r2_execution_added"] > e["r2_execution_added"])


def _in_sizes(g: dict, inside: bool) -> list[str]:
  """The evaluation sizes of a group in (or out of) distribution, ascending."""
  return sorted((s for s, m in g["sizes"].items() if m["in_distribution"] == inside), key=int)


def _range_mean(g: dict, rng: str, metric: str) -> float:
  return g[rng][metric]["mean"]


def needed_alignment(groups: dict[str, dict]) -> dict:
  cases = {}
  for task in sorted({g["task"] for g in groups.values()}):
    g = groups[f"{task}/anira_o"]
    inside = _in_sizes(g, True)
    depth = lambda size: g["sizes"][size]["mean_depth"]["mean"]
    case = {"spearman_needed": g["needed"]["spearman"]["rho"]["mean"],
            "depth_smallest_size": depth(inside[0]), "depth_largest_size": depth(inside[-1])}
    case["holds"] = (case["spearman_needed"] >= NEEDED_MIN_RHO
                     and case["depth_largest_size"] > case["depth_smallest_size"])
    cases[task] = case
  return {**cases, "holds": all(c["holds"] for c in cases.values())}


def needed_no_extrapolation(groups: dict[str, dict]) -> dict:
  best_forced = lambda g: float(np.max(np.mean([g["forced"][size]["forced_sequence_accuracy"]
                                                for size in _in_sizes(g, False)], axis=0)))
  return _collapses(groups, "best_forced_sequence_accuracy_out", best_forced)


def _collapses(groups: dict[str, dict], name: str, accuracy_out: Callable[[dict], float]) -> dict:
  """Per adaptive group: the training range was learned, the accuracy out of distribution
  (`accuracy_out`, reported as `name`) is at most OOD_ACCURACY_RATIO of the one in distribution,
  and the mean depth out of distribution is at least the one in distribution."""
  cases = {}
  for key, g in sorted(groups.items()):
    if not g["adaptive"]:
      continue
    case = {"sequence_accuracy_in": _range_mean(g, "in_distribution", "sequence_accuracy"),
            name: accuracy_out(g),
            "mean_depth_in": _range_mean(g, "in_distribution", "mean_depth"),
            "mean_depth_out": _range_mean(g, "out_of_distribution", "mean_depth")}
    case["holds"] = (case["sequence_accuracy_in"] >= LEARNED_ACCURACY
                     and case[name] <= OOD_ACCURACY_RATIO * case["sequence_accuracy_in"]
                     and case["mean_depth_out"] >= case["mean_depth_in"])
    cases[key] = case
  return {**cases, "holds": bool(cases) and all(c["holds"] for c in cases.values())}


def needed_decision_timing(groups: dict[str, dict]) -> dict:
  cases = {}
  for task in sorted({g["task"] for g in groups.values()}):
    n = {v: {**{k: groups[f"{task}/{v}"]["regression"][k]["mean"]
                for k in ("r2_structural", "r2_execution_added")},
             "spearman_needed": groups[f"{task}/{v}"]["needed"]["spearman"]["rho"]["mean"]}
         for v in ADAPTIVE}
    cases[task] = {**n, "holds": (_timing_holds(n) and n["anira_o"]["spearman_needed"]
                                  > n["anira_e"]["spearman_needed"])}
  return {**cases, "holds": all(c["holds"] for c in cases.values())}


def allocation_pays(groups: dict[str, dict]) -> dict:
  cases = {}
  for key, g in sorted(groups.items()):
    fixed = plots.fixed_curve([f for f in groups.values() if f["task"] == g["task"]])
    if not g["adaptive"] or not fixed:
      continue
    depth = _range_mean(g, "in_distribution", "mean_depth")
    curve = float(np.interp(depth, [f["k_max"] for f in fixed],
                            [_range_mean(f, "in_distribution", "sequence_accuracy")
                             for f in fixed]))
    case = {"mean_depth_in": depth, "fixed_curve_at_depth": curve,
            "sequence_accuracy_in": _range_mean(g, "in_distribution", "sequence_accuracy")}
    case["holds"] = case["sequence_accuracy_in"] > curve
    cases[key] = case
  return {**cases, "holds": bool(cases) and all(
      c["holds"] for key, c in cases.items() if key.endswith("/anira_o"))}


FINDINGS = {"alignment": alignment, "no_extrapolation": no_extrapolation,
            "decision_timing": decision_timing, "needed_alignment": needed_alignment,
            "needed_no_extrapolation": needed_no_extrapolation,
            "needed_decision_timing": needed_decision_timing, "allocation_pays": allocation_pays}


def findings(groups: dict[str, dict]) -> dict:
  """Each finding's numbers, its rule and whether it holds, from analyze's groups."""
  return {name: {"rule": RULES[name], **rule(groups)} for name, rule in FINDINGS.items()}


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
  workdirs = train_runs(FLAGS.scale, os.path.join(FLAGS.out, "runs"))
  trained = time.perf_counter() - start
  result = {"machine": analyze.machine(), **analyze.analyze(workdirs)}
  found = findings(result["groups"])
  with open(os.path.join(FLAGS.out, "findings.json"), "w") as f:
    json.dump(found, f, indent=1)
  head = analyze.header("Reproduction", command) + (
      f"\nThe {len(workdirs)} runs took {trained:.0f} s to train (or to find finished).\n"
      + findings_markdown(found))
  analyze.write(FLAGS.out, result, head)
  print(f"analysis took {time.perf_counter() - start - trained:.0f} s")
  print(os.path.join(FLAGS.out, "findings.json"))
