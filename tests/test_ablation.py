"""The halting ablation's aggregation, default rule and report."""
from anira_jax import ablation


def _cell(task, variant, remedy, seed, acc, rho):
  return {"task": task, "variant": variant, "remedy": remedy, "seed": seed,
          "sequence_accuracy": acc, "mean_depth": 3.0, "depth_std": 1.0, "spearman": rho}


def test_aggregate_mean_and_std_over_seeds():
  table = ablation.aggregate([_cell("sorting", "anira_o", "a", 0, 0.8, 0.1),
                              _cell("sorting", "anira_o", "a", 1, 1.0, 0.3)])
  mean, std = table[("sorting", "anira_o", "a")]["sequence_accuracy"]
  assert (round(mean, 6), round(std, 6)) == (0.9, 0.1)


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
