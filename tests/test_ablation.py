"""The halting ablation's cell metrics, aggregation, default rule and report."""
import numpy as np
import pytest

from anira_jax import ablation, config, tasks
from conftest import run_module, stderr_lines


def _cell(task, variant, remedy, seed, acc, rho, other=0.0):
  return {"task": task, "variant": variant, "remedy": remedy, "seed": seed,
          "sequence_accuracy": acc, "mean_depth": 3.0, "depth_std": 1.0, "spearman": rho,
          "other_spearman": {"depth": other}}


def test_every_remedy_sets_every_halting_field():
  # A cell's config must not depend on the config files' halting default.
  fields = set(config.default("graph", "anira_o").halting)
  assert set(ablation.PLAIN) == fields
  for remedy, change in ablation.REMEDIES.items():
    assert set(change) <= fields, remedy
    overrides = ablation.remedy_overrides(remedy)
    assert sorted(o.split("=")[0] for o in overrides) == sorted(f"halting.{f}" for f in fields)


def test_cell_metrics_on_hand_built_records():
  # Four in-distribution answer tokens and one out of distribution (ignored).
  records = {"in_distribution": np.array([True, True, True, True, False]),
             "depth": np.array([1, 2, 3, 4, 8]),
             "feature/frontier_size": np.array([1, 2, 3, 5, 0]),    # same order as depth
             "feature/newly_enabled": np.array([4, 3, 2, 1, 0]),    # reversed
             "feature/depth": np.array([2, 2, 2, 2, 0])}            # constant: 0 by definition
  for name in ("num_nodes", "num_edges", "in_degree", "out_degree", "max_degree"):
    records[f"feature/{name}"] = np.zeros(5)
  size = lambda inside, acc: {"in_distribution": inside, "sequence_accuracy": acc,
                              "token_accuracy": acc, "mean_depth": 1.0}
  result = {"sizes": {"3": size(True, 0.5), "4": size(True, 1.0), "8": size(False, 0.0)}}
  m = ablation.cell_metrics(records, result, tasks.get("graph"))
  assert m["sequence_accuracy"] == 0.75
  assert m["mean_depth"] == 2.5 and m["depth_std"] == np.std([1, 2, 3, 4])
  assert m["spearman"] == 1.0
  assert m["other_spearman"] == {"newly_enabled": -1.0, "depth": 0.0}


def test_aggregate_mean_and_std_over_seeds():
  table = ablation.aggregate([_cell("sorting", "anira_o", "a", 0, 0.8, 0.1, other=0.2),
                              _cell("sorting", "anira_o", "a", 1, 1.0, 0.3, other=0.4)])
  mean, std = table[("sorting", "anira_o", "a")]["sequence_accuracy"]
  assert (round(mean, 6), round(std, 6)) == (0.9, 0.1)
  assert round(table[("sorting", "anira_o", "a")]["other_spearman"]["depth"], 6) == 0.3


def test_default_rule_prefers_alignment_among_accurate_settings():
  cells = []
  for variant in ("anira_o", "anira_e"):
    cells += [_cell("graph", variant, "accurate_flat", 0, 0.95, 0.05),
              _cell("graph", variant, "accurate_aligned", 0, 0.92, 0.40),
              _cell("graph", variant, "aligned_but_wrong", 0, 0.50, 0.90)]
  table = ablation.aggregate(cells)
  assert ablation.choose_default(table) == "accurate_aligned"


def test_default_must_be_eligible_in_every_pair():
  cells = [_cell("graph", "anira_o", "a", 0, 0.9, 0.5), _cell("graph", "anira_o", "b", 0, 0.9, 0.1),
           _cell("graph", "anira_e", "a", 0, 0.5, 0.5), _cell("graph", "anira_e", "b", 0, 0.9, 0.1)]
  assert ablation.choose_default(ablation.aggregate(cells)) == "b"


def test_markdown_states_rule_before_table_and_command():
  table = ablation.aggregate([_cell("sorting", "anira_o", "deep_start", 0, 0.9, 0.3)])
  text = ablation.markdown(table, "python -m anira_jax.ablation --seeds=0", [], [0])
  assert "python -m anira_jax.ablation --seeds=0" in text
  assert text.index(ablation.RULE) < text.index("| sorting | anira_o | deep_start |")
  assert "Chosen: `deep_start`" in text
  assert "sorting `remaining`" in text and "| depth +0.00 |" in text


@pytest.mark.parametrize("arg,message", [("--seeds=0,x", "--seeds must be integers, got 0,x"),
                                         ("--remedies=foo", "unknown remedies ['foo']")])
def test_bad_flags_give_one_line(tmp_path, arg, message):
  proc = run_module("anira_jax.ablation", arg, f"--out={tmp_path}/t.md",
                    f"--workdir={tmp_path}/cells")
  assert proc.returncode != 0 and len(stderr_lines(proc)) == 1 and message in proc.stderr
  assert not (tmp_path / "cells").exists() and not (tmp_path / "t.md").exists()
