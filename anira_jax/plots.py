"""Figures of an analysis (the "groups" of `analyze.analyze`), one set per task, as PNG files, and
the training curves of a run.

python -m anira_jax.plots --workdirs W1,W2,...   writes W/curves.png for each run (from its
metrics.jsonl and evals.jsonl) and prints the paths.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global state), so
plotting works headless and leaves a notebook's own backend alone.
"""
import json
import os

from absl import flags
import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
import numpy as np

from anira_jax import cli, model
from anira_jax.errors import UserError

LABELS = {"anira_o": "ANIRA-O (online)", "anira_e": "ANIRA-E (early)", "fixed": "fixed depth",
          "transformer": "Transformer"}
COLORS = {"anira_o": "C0", "anira_e": "C1", "fixed": "C2", "transformer": "C3"}
MARKERS = {"anira_o": "o", "anira_e": "s", "fixed": "^", "transformer": "D"}   # told apart
R2_BARS = {"r2_structural": "structural", "r2_execution": "execution",
           "r2_execution_added": "execution added\nover structural"}


def _name(g: dict) -> str:
  """Legend name of a group: the variant, with its depth for a fixed-depth baseline."""
  return LABELS[g["variant"]] + ("" if g["adaptive"] else f" k={g['k_max']}")


def _figure(panels: int = 1, width: float = 5.5) -> tuple[Figure, list]:
  fig = Figure(figsize=(width * panels, 4.0), layout="constrained")
  FigureCanvasAgg(fig)
  return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def _by_size(ax, groups: list[dict], metric: str, ylabel: str) -> None:
  lo, hi = groups[0]["train_sizes"]
  ax.axvspan(lo - 0.5, hi + 0.5, color="0.9", zorder=0, label="training sizes")
  for g in groups:
    sizes = [int(s) for s in g["sizes"]]
    stats = [g["sizes"][str(s)][metric] for s in sizes]
    ax.errorbar(sizes, [m["mean"] for m in stats], yerr=[m["std"] for m in stats], capsize=3,
                marker=MARKERS[g["variant"]], markerfacecolor="none", markersize=8,
                color=COLORS[g["variant"]], label=_name(g))
  ax.set_xticks(sorted({int(s) for g in groups for s in g["sizes"]}))
  ax.set_xlabel("size (difficulty)")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)


def accuracy_vs_size(task: str, groups: list[dict]) -> Figure:
  fig, (tok, seq) = _figure(2)
  _by_size(tok, groups, "token_accuracy", "token accuracy")
  _by_size(seq, groups, "sequence_accuracy", "sequence accuracy")
  for ax in (tok, seq):
    ax.set_ylim(-0.03, 1.03)
  fig.legend(*tok.get_legend_handles_labels(), loc="outside lower center", ncols=len(groups) + 1)
  fig.suptitle(f"{task}: accuracy per size (mean ± std over seeds)")
  return fig


def depth_vs_size(task: str, groups: list[dict]) -> Figure:
  fig, (ax,) = _figure()
  _by_size(ax, groups, "mean_depth", "mean depth (iterations)")
  ax.set_ylim(0, max(g["k_max"] for g in groups) + 0.5)
  ax.legend(loc="best")
  ax.set_title(f"{task}: mean depth per size (mean ± std over seeds)")
  return fig


def _depth_table(ax, g: dict, table: dict) -> None:
  """Mean depth ± s.e.m. at each value of a table of `stats.depth_by_value`."""
  ax.errorbar(table["values"], table["mean"], yerr=table["sem"], capsize=3,
              marker=MARKERS[g["variant"]], markerfacecolor="none", markersize=8,
              color=COLORS[g["variant"]], label=_name(g))


def depth_vs_feature(task: str, groups: list[dict]) -> Figure:
  fig, (ax,) = _figure()
  for g in groups:
    _depth_table(ax, g, g["depth_by_feature"])
  ax.set_xlabel(f"{groups[0]['main_feature']} (main execution feature)")
  ax.set_ylabel("mean depth (iterations)")
  ax.set_ylim(0, max(g["k_max"] for g in groups) + 0.5)
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title(f"{task}: depth vs {groups[0]['main_feature']}\n"
               "in-distribution answer tokens, mean ± s.e.m.")
  return fig


def r2_bars(task: str, groups: list[dict]) -> Figure:
  fig, (ax,) = _figure()
  x = np.arange(len(R2_BARS))
  width = 0.8 / len(groups)
  for i, g in enumerate(groups):
    stats = [g["regression"][k] for k in R2_BARS]
    ax.bar(x + (i - (len(groups) - 1) / 2) * width, [m["mean"] for m in stats], width,
           yerr=[m["std"] for m in stats], capsize=3, color=COLORS[g["variant"]],
           label=_name(g))
  ax.set_xticks(x, list(R2_BARS.values()))
  ax.set_ylabel("R² of depth (linear fit)")
  ax.set_xlabel("features in the fit")
  ax.grid(axis="y", alpha=0.3)
  ax.legend()
  ax.set_title(f"{task}: depth explained by structural vs execution features\n"
               "in-distribution answer tokens, mean ± std over seeds")
  return fig


def depth_histograms(task: str, groups: list[dict]) -> Figure:
  fig, axes = _figure(len(groups), width=4.5)
  ranges = (("in_distribution", "in distribution", 1.0, ""),
            ("out_of_distribution", "out of distribution", 0.45, "//"))
  for ax, g in zip(axes, groups):
    depths = np.arange(1, g["k_max"] + 1)
    for offset, (key, _, alpha, hatch) in zip((-0.2, 0.2), ranges):
      ax.bar(depths + offset, g["depth_hist"][key], 0.4, color=COLORS[g["variant"]], alpha=alpha,
             hatch=hatch, edgecolor="black", linewidth=0.5)
    ax.set_xticks(depths)
    ax.set_xlabel("depth (iterations)")
    ax.set_ylabel("fraction of answer tokens")
    ax.set_ylim(0, 1)
    ax.set_title(_name(g))
  fig.legend(handles=[Patch(facecolor="0.4", alpha=alpha, hatch=hatch, edgecolor="black",
                            label=label) for _, label, alpha, hatch in ranges],
             loc="outside lower center", ncols=2)
  fig.suptitle(f"{task}: depth histograms")
  return fig


def _finish(ax, xlabel: str, ylabel: str, ylim: tuple[float, float], title: str) -> None:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_ylim(*ylim)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title(title)


def fixed_curve(groups: list[dict]) -> list[dict]:
  """The groups of fixed-depth runs of the shared block (one per trained k), by k."""
  fixed = [g for g in groups if not (model.VARIANTS[g["variant"]].adaptive
                                     or model.VARIANTS[g["variant"]].stacked)]
  return sorted(fixed, key=lambda g: g["k_max"])


def accuracy_vs_compute(task: str, groups: list[dict]) -> Figure:
  """In-distribution sequence accuracy against mean iterations per answer token: fixed-depth
  baselines trained at each k as a curve, adaptive runs as points, and each adaptive run forced
  to halt every token at k (dashed)."""
  fig, (ax,) = _figure(width=6.5)
  acc = lambda g: g["in_distribution"]["sequence_accuracy"]
  fixed = fixed_curve(groups)
  if fixed:
    ax.errorbar([g["k_max"] for g in fixed], [acc(g)["mean"] for g in fixed],
                yerr=[acc(g)["std"] for g in fixed], capsize=3, color=COLORS["fixed"],
                marker=MARKERS["fixed"], label="fixed depth, trained at k")
  for g in groups:
    if not g["adaptive"]:
      continue
    forced = g["needed"]["forced_sequence_accuracy"]["mean"]
    ax.plot(np.arange(1, len(forced) + 1), forced, linestyle="--", color=COLORS[g["variant"]],
            alpha=0.7, label=f"{_name(g)}, every token forced to k")
    depth = g["in_distribution"]["mean_depth"]
    ax.errorbar([depth["mean"]], [acc(g)["mean"]], xerr=[depth["std"]], yerr=[acc(g)["std"]],
                capsize=3, marker=MARKERS[g["variant"]], markersize=11, linestyle="none",
                color=COLORS[g["variant"]], label=f"{_name(g)}, own halting")
  _finish(ax, "mean iterations per answer token (in distribution)",
          "in-distribution sequence accuracy", (-0.03, 1.03),
          f"{task}: accuracy against compute\n(above the fixed curve: allocation that pays)")
  return fig


def forced_depth_curves(task: str, groups: list[dict]) -> Figure:
  """Sequence accuracy per size when every token is forced to halt at k, one panel per run."""
  fig, axes = _figure(len(groups), width=4.5)
  for ax, g in zip(axes, groups):
    lo, hi = g["train_sizes"]
    for i, (size, f) in enumerate(g["forced"].items()):
      inside = lo <= int(size) <= hi
      acc = f["forced_sequence_accuracy"]
      ax.plot(np.arange(1, len(acc) + 1), acc, marker="o", markersize=4, color=f"C{i}",
              linestyle="-" if inside else "--", label=f"n={size}{'' if inside else ' (ood)'}")
    ax.set_xlabel("forced depth k")
    ax.set_ylabel("sequence accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(_name(g))
  fig.suptitle(f"{task}: accuracy when every token halts at k (mean over seeds)")
  return fig


def needed_vs_own(task: str, groups: list[dict]) -> Figure:
  """Own depth against needed depth (oracle exit), and the distribution of needed depth."""
  fig, (ax, hist) = _figure(2)
  k_max = max(g["k_max"] for g in groups)
  ax.plot([1, k_max], [1, k_max], color="0.6", linestyle=":", label="own = needed")
  width = 0.8 / len(groups)
  for i, g in enumerate(groups):
    _depth_table(ax, g, g["needed"]["own_by_needed"])
    depths = np.arange(1, len(g["needed"]["hist"]) + 1)
    hist.bar(depths + (i - (len(groups) - 1) / 2) * width, g["needed"]["hist"], width,
             color=COLORS[g["variant"]], label=_name(g))
  ax.set_xlabel("needed depth (smallest forced k giving the own prediction)")
  ax.set_ylabel("own depth (mean ± s.e.m.)")
  ax.set_ylim(0, k_max + 0.5)
  ax.grid(alpha=0.3)
  ax.legend()
  hist.set_xlabel("needed depth")
  hist.set_ylabel("fraction of answer tokens")
  hist.legend()
  fig.suptitle(f"{task}: what the model needs against what it spends (in distribution)")
  return fig


def alignment_over_training(task: str, groups: list[dict]) -> Figure:
  """Spearman of depth with needed depth and with the main feature at each evaluation."""
  fig, (ax,) = _figure()
  for g in groups:
    h = g["history"]
    ax.plot(h["steps"], h["spearman_needed"], marker="o", color=COLORS[g["variant"]],
            label=f"{_name(g)}: with needed depth")
    ax.plot(h["steps"], h["spearman_main"], marker="x", linestyle="--",
            color=COLORS[g["variant"]], label=f"{_name(g)}: with {g['main_feature']}")
  ax.axhline(0.0, color="0.6", linewidth=0.8)
  _finish(ax, "training step", "Spearman correlation of depth", (-1.03, 1.03),
          f"{task}: alignment over training (in distribution, mean over seeds)")
  return fig


def figures(groups: dict[str, dict]) -> dict[str, Figure]:
  """File name -> figure, for every task among the groups."""
  out = {}
  for task in sorted({g["task"] for g in groups.values()}):
    of_task = [g for g in groups.values() if g["task"] == task]
    adaptive = [g for g in of_task if g["adaptive"]]
    out[f"{task}_accuracy.png"] = accuracy_vs_size(task, of_task)
    out[f"{task}_depth.png"] = depth_vs_size(task, of_task)
    if adaptive:
      out[f"{task}_depth_vs_{adaptive[0]['main_feature']}.png"] = depth_vs_feature(task, adaptive)
      out[f"{task}_r2.png"] = r2_bars(task, adaptive)
      out[f"{task}_accuracy_vs_compute.png"] = accuracy_vs_compute(task, of_task)
      out[f"{task}_forced_depth.png"] = forced_depth_curves(task, adaptive)
      out[f"{task}_needed_depth.png"] = needed_vs_own(task, adaptive)
      if any(g["history"]["steps"] for g in adaptive):
        out[f"{task}_alignment_over_training.png"] = alignment_over_training(task, adaptive)
    out[f"{task}_depth_hist.png"] = depth_histograms(task, of_task)
  return out


def write(groups: dict[str, dict], directory: str) -> list[str]:
  """Saves every figure under directory; returns the file names."""
  os.makedirs(directory, exist_ok=True)
  made = figures(groups)
  for name, fig in made.items():
    fig.savefig(os.path.join(directory, name), dpi=110)
  return list(made)


def _steps(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  return (np.array([r["step"] for r in records]),
          np.array([np.nan if r[key] is None else r[key] for r in records], float))


def training_curves(name: str, metrics: list[dict], evals: list[dict]) -> Figure:
  """The training curves of one run against the step: loss and cross-entropy; token accuracy,
  with the evaluations' sequence accuracy in and out of distribution (mean over sizes); mean
  depth ± its standard deviation over answer tokens; and the mean halting probability at each
  iteration (`metrics` are the lines of metrics.jsonl, `evals` those of evals.jsonl)."""
  fig = Figure(figsize=(11.0, 7.5), layout="constrained")
  FigureCanvasAgg(fig)
  (loss, acc), (depth, halt) = fig.subplots(2, 2, sharex=True)
  step, value = _steps(metrics, "loss")
  loss.plot(step, value, color="C0", label="loss")
  loss.plot(*_steps(metrics, "ce"), color="C1", linestyle="--", label="cross-entropy")
  loss.set_yscale("log" if np.nanmin(value, initial=np.inf) > 0 else "linear")
  _finish(loss, "", "training loss", loss.get_ylim(), "loss")
  acc.plot(*_steps(metrics, "token_accuracy"), color="C0", label="token accuracy (training batch)")
  for rng, marker, label in (("in_distribution", "o", "in"), ("out_of_distribution", "s", "out of")):
    points = [(e["step"], np.mean([m["sequence_accuracy"] for m in e["sizes"].values()
                                   if m["in_distribution"] == (rng == "in_distribution")]))
              for e in evals if any(m["in_distribution"] == (rng == "in_distribution")
                                    for m in e["sizes"].values())]
    if points:
      acc.plot(*zip(*points), marker=marker, color="C2" if marker == "o" else "C3",
               label=f"sequence accuracy {label} distribution (evaluation)")
  _finish(acc, "", "accuracy", (-0.03, 1.03), "accuracy")
  step, mean = _steps(metrics, "mean_depth")
  std = _steps(metrics, "depth_std")[1]
  depth.plot(step, mean, color="C0", label="mean depth (answer tokens)")
  depth.fill_between(step, mean - std, mean + std, color="C0", alpha=0.25, label="± std")
  k_max = max((len(r["depth_fraction"]) for r in metrics), default=1)
  _finish(depth, "training step", "depth (iterations)", (0, k_max + 0.5), "depth")
  probs = np.array([[np.nan if p is None else p for p in r["halt_prob"]] for r in metrics], float)
  if probs.size and not np.isnan(probs).all():
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, probs.shape[1]))
    for t in range(probs.shape[1]):
      halt.plot(step, probs[:, t], color=colors[t], label=f"iteration {t + 1}")
  else:
    halt.text(0.5, 0.5, "no halting unit (fixed depth)", ha="center", va="center",
              transform=halt.transAxes)
    halt.plot([], [], label="none")
  _finish(halt, "training step", "mean halting probability λ", (-0.03, 1.03),
          "halting probability per iteration")
  fig.suptitle(f"{name}: training curves")
  return fig


def _jsonl(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  try:
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {path} ({type(e).__name__}: {cli.one_line(e)})") from None


def write_curves(workdir: str) -> str:
  """<workdir>/curves.png from its metrics.jsonl and evals.jsonl; returns the path."""
  cli.require_workdir(workdir)
  metrics = _jsonl(os.path.join(workdir, "metrics.jsonl"))
  if not metrics:
    raise UserError(f"{workdir} has no logged training step (metrics.jsonl); train a run there "
                    f"with python -m anira_jax.main --config=configs/<task>.py --workdir={workdir}")
  path = os.path.join(workdir, "curves.png")
  training_curves(os.path.basename(os.path.normpath(workdir)), metrics,
                  _jsonl(os.path.join(workdir, "evals.jsonl"))).savefig(path, dpi=100)
  return path


def main(argv: list[str]) -> None:
  for workdir in _WORKDIRS.value + argv[1:]:   # --workdirs W1 W2 ... leaves W2 ... as arguments
    print(write_curves(workdir))


if __name__ == "__main__":
  _WORKDIRS = flags.DEFINE_list("workdirs", None, "Run directories.", required=True)
  cli.run(main)
