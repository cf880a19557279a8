"""The halting ablation's cell metrics, aggregation, default rule and report."""
import glob
import os
import re

import numpy as np
import pytest

from anira_jax import cli, config, halting, tasks
from anira_jax.experiments import ablation
from conftest import run_module, stderr_lines


def _cell(task, variant, remedy, seed, acc, rho, other=0.0):
  return {"task": task, "variant": variant, "remedy": remedy, "seed": seed,
          "sequence_accuracy": acc, "mean_depth": 3.0, "depth_std": 1.0, "spearman": rho,
          "other_spearman": {"depth": other}}


def test_every_remedy_sets_every_halting_field_and_a_registered_penalty():
  # A cell's config must not depend on the config files' halting default.
  fields = set(config.default("graph", "anira_o").halting)
  for remedy, change in ablation.remedies().items():
    assert set(change) <= fields, remedy
    assert {**config.HALTING_PLAIN, **change}["penalty"] in halting.PENALTIES, remedy
    overrides = ablation.remedy_overrides(remedy)
    assert sorted(o.split("=")[0] for o in overrides) == sorted(f"halting.{f}" for f in fields)


def test_a_registered_penalty_is_a_remedy_of_its_own(depth_squared_penalty):
  # The built-in penalties already have remedies (HALTING_REMEDIES): only the new one is added.
  remedies = ablation.remedies()
  assert list(remedies) == [*config.HALTING_REMEDIES, depth_squared_penalty]
  assert remedies[depth_squared_penalty] == {"penalty": depth_squared_penalty}
  overrides = ablation.remedy_overrides(depth_squared_penalty)
  assert "halting.penalty='depth_squared'" in overrides and "halting.bias_init=0.0" in overrides


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


def test_rule_prefers_alignment_among_accurate_settings():
  cells = []
  for variant in ("anira_o", "anira_e"):
    cells += [_cell("graph", variant, "accurate_flat", 0, 0.95, 0.05),
              _cell("graph", variant, "accurate_aligned", 0, 0.92, 0.40),
              _cell("graph", variant, "aligned_but_wrong", 0, 0.50, 0.90)]
  table = ablation.aggregate(cells)
  assert ablation.rank(table) == ["accurate_aligned", "accurate_flat"]


def test_ranked_remedies_must_be_eligible_in_every_pair():
  cells = [_cell("graph", "anira_o", "a", 0, 0.9, 0.5), _cell("graph", "anira_o", "b", 0, 0.9, 0.1),
           _cell("graph", "anira_e", "a", 0, 0.5, 0.5), _cell("graph", "anira_e", "b", 0, 0.9, 0.1)]
  assert ablation.rank(ablation.aggregate(cells)) == ["b"]


def _full_cells(stds: dict[str, list[float]], trained: list[str]):
  """A stand-in for training at full length: remedy -> cells whose depth std per pair is given."""
  def train_cells(remedy):
    trained.append(remedy)
    return [{**_cell("graph", v, remedy, 0, 0.99, 0.0), "depth_std": std}
            for v, std in zip(("anira_o", "anira_e"), stds[remedy])]
  return train_cells


def test_guard_takes_the_first_remedy_with_spread_depth_in_every_pair():
  trained = []
  stds = {"collapses": [1.2, 0.0], "spread": [0.9, 0.5], "later": [2.0, 2.0]}
  default, full = ablation.confirm(["collapses", "spread", "later"], _full_cells(stds, trained))
  assert default == "spread" and trained == ["collapses", "spread"]   # stops at the first pass
  assert list(full) == [("graph", v, r) for r in ("collapses", "spread")
                        for v in ("anira_o", "anira_e")]                 # in the order tried


def test_guard_gives_none_when_every_remedy_collapses():
  trained = []
  default, full = ablation.confirm(["a", "b"], _full_cells({"a": [0.49, 1.0], "b": [0.0, 0.0]},
                                                           trained))
  assert default is None and trained == ["a", "b"] and len(full) == 4


def test_markdown_states_rule_and_guard_before_tables_and_command():
  table = ablation.aggregate([_cell("sorting", "anira_o", "deep_start", 0, 0.9, 0.3),
                              _cell("sorting", "anira_o", "plain_ponder", 0, 0.9, 0.1)])
  full = ablation.aggregate([{**_cell("sorting", "anira_o", "deep_start", 0, 0.99, 0.2),
                              "depth_std": 0.7}])
  reference = ablation.aggregate([_cell("sorting", "anira_o", "plain_ponder", 0, 0.98, 0.1)])
  text = ablation.markdown(table, full, reference, "deep_start",
                           "python -m anira_jax.ablation --seeds=0", ["train.steps=8"], [0], [0])
  assert "python -m anira_jax.ablation --seeds=0" in text
  first_row = text.index("| sorting | anira_o | deep_start | 0.900")
  assert text.index(ablation.RULE) < text.index("Full-length guard") < first_row
  assert "Order by this rule: `deep_start`, `plain_ponder`." in text
  assert "**Default: `deep_start`.**" in text and "`deep_start` (passes)" in text
  assert text.index("| sorting | anira_o | deep_start | 0.990") < text.index(
      "| sorting | anira_o | plain_ponder | 0.980")
  assert "sorting `remaining`" in text and "| depth +0.00 |" in text


def test_config_default_is_the_remedy_docs_halting_names():
  # docs/halting.md is the ablation's output; config.HALTING_DEFAULT must name the remedy it chose,
  # and no config file may override a halting field.
  root = os.path.join(os.path.dirname(__file__), "..")
  with open(os.path.join(root, "docs", "halting.md")) as f:
    default = re.search(r"\*\*Default: `(\w+)`\.\*\*", f.read()).group(1)
  assert config.HALTING_DEFAULT == default
  expected = {**config.HALTING_PLAIN, **config.HALTING_REMEDIES[default]}
  paths = glob.glob(os.path.join(root, "configs", "*.py"))
  assert paths
  for path in paths:
    assert cli.load_config_file(path).halting.to_dict() == expected, path


@pytest.mark.parametrize("arg,message", [
    ("--seeds=0,x", "--seeds must be integers, got 0,x"),
    ("--full_length_seeds=y", "--full_length_seeds must be integers, got y"),
    ("--remedies=foo", "unknown remedies ['foo']")])
def test_bad_flags_give_one_line(tmp_path, arg, message):
  proc = run_module("anira_jax.ablation", arg, f"--out={tmp_path}/t.md",
                    f"--workdir={tmp_path}/cells")
  assert proc.returncode != 0 and len(stderr_lines(proc)) == 1 and message in proc.stderr
  assert not (tmp_path / "cells").exists() and not (tmp_path / "t.md").exists()
