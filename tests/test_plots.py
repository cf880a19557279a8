"""plots.py: which figures a task gets, and that each is labelled and saved as a PNG."""
from anira_jax import plots


def _group(variant: str, adaptive: bool) -> dict:
  ms = lambda mean: {"mean": mean, "std": 0.05}
  return {
      "task": "graph", "variant": variant, "adaptive": adaptive, "train_sizes": [3, 6],
      "k_max": 8, "main_feature": "frontier_size",
      "sizes": {str(s): {"in_distribution": s <= 6, "token_accuracy": ms(1.0 / s),
                         "sequence_accuracy": ms(0.5 / s), "mean_depth": ms(s / 3)}
                for s in (3, 4, 6, 8)},
      "regression": {"r2_structural": ms(0.4), "r2_execution": ms(0.2), "r2_both": ms(0.5),
                     "r2_execution_added": ms(0.1)},
      "depth_by_feature": {"feature": "frontier_size", "values": [1.0, 2.0], "mean": [3.0, 2.5],
                           "sem": [0.1, 0.2], "count": [10, 5]},
      "depth_hist": {"in_distribution": [0.1] * 8, "out_of_distribution": [0.0] * 7 + [1.0]},
      "in_distribution": {"sequence_accuracy": ms(0.9), "mean_depth": ms(3.0)},
      "needed": {"hist": [0.5, 0.3, 0.2] + [0.0] * 5,
                 "own_by_needed": {"values": [1, 2, 3], "mean": [2.0, 3.0, 3.5],
                                   "sem": [0.1, 0.1, 0.2], "count": [5, 3, 2]},
                 "forced_sequence_accuracy": {"mean": [0.5 + k / 20 for k in range(8)],
                                              "std": [0.0] * 8}},
      "forced": {str(s): {"forced_sequence_accuracy": [0.1 * k for k in range(8)],
                          "forced_token_accuracy": [0.1 * k for k in range(8)]}
                 for s in (3, 4, 6, 8)},
      "history": {"steps": [500, 1000], "spearman_needed": [0.1, 0.4],
                  "spearman_main": [0.0, 0.2]},
  }


def test_figures_per_task_and_labels():
  groups = {"graph/anira_o": _group("anira_o", True), "graph/fixed": _group("fixed", False)}
  figs = plots.figures(groups)
  assert list(figs) == ["graph_accuracy.png", "graph_depth.png",
                        "graph_depth_vs_frontier_size.png", "graph_r2.png",
                        "graph_accuracy_vs_compute.png", "graph_forced_depth.png",
                        "graph_needed_depth.png", "graph_alignment_over_training.png",
                        "graph_depth_hist.png"]
  for name, fig in figs.items():
    assert fig.get_suptitle() or all(ax.get_title() for ax in fig.axes), name
    for ax in fig.axes:
      assert ax.get_xlabel() and ax.get_ylabel(), name
    assert fig.legends or all(ax.get_legend() for ax in fig.axes), name
  # Only adaptive variants are in the alignment figures; every variant elsewhere.
  labels = lambda name: {t.get_text() for leg in figs[name].legends + [
      ax.get_legend() for ax in figs[name].axes if ax.get_legend()] for t in leg.get_texts()}
  assert labels("graph_r2.png") == {"ANIRA-O (online)"}
  assert {"ANIRA-O (online)", "fixed depth k=8", "training sizes"} <= labels("graph_accuracy.png")
  assert [ax.get_title() for ax in figs["graph_depth_hist.png"].axes] == [
      "ANIRA-O (online)", "fixed depth k=8"]
  assert labels("graph_accuracy_vs_compute.png") == {
      "fixed depth, trained at k", "ANIRA-O (online), every token forced to k",
      "ANIRA-O (online), own halting"}


def test_no_alignment_figures_without_adaptive_depth(tmp_path):
  names = plots.write({"graph/fixed": _group("fixed", False)}, str(tmp_path))
  assert names == ["graph_accuracy.png", "graph_depth.png", "graph_depth_hist.png"]
  for name in names:
    assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
