"""exits: causal exit rules on forced-depth outputs, scored as evaluation scores the own halting."""
import json

import numpy as np
import pytest

from anira_jax import exits, runs, stats

# The worker of test_checkpoint has trained the shared anira_o run already.
pytestmark = pytest.mark.xdist_group("test_checkpoint")


def _probs(*rows: list[list[float]]) -> np.ndarray:
  """[K, N, V] from one [K, V] list per token."""
  return np.stack([np.asarray(r, float) for r in rows], axis=1)


# Token 0: argmax 0, 1, 1, 1 with top probability 0.5, 0.6, 0.95, 0.95.
# Token 1: argmax 2 at every exit, the distribution unchanged from the second exit on.
# Token 2: argmax 0, 1, 0, 1: never stable, never confident.
P = _probs([[0.5, 0.3, 0.2], [0.3, 0.6, 0.1], [0.03, 0.95, 0.02], [0.03, 0.95, 0.02]],
           [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]],
           [[0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.6, 0.4, 0.0], [0.4, 0.6, 0.0]])


def test_rules_stop_at_the_first_exit_they_allow_and_k_max_otherwise():
  depth = lambda rule: exits.exit_depth(rule(P)).tolist()
  assert depth(exits.confidence(0.9)) == [3, 4, 4]
  assert depth(exits.confidence(0.8)) == [3, 2, 4]
  assert depth(exits.patience(1)) == [3, 2, 4]   # argmax equal to the exit before
  assert depth(exits.patience(2)) == [4, 3, 4]   # ... and to the one before that
  assert depth(exits.stability(1e-6)) == [4, 3, 4]   # KL exactly 0 from exit 3 (token 1)
  kl_1to2 = float(np.sum(P[1, 0] * np.log(P[1, 0] / P[0, 0])))   # token 0, exit 2 against 1
  assert depth(exits.stability(kl_1to2 + 1e-9))[0] == 2
  assert depth(exits.either(exits.patience(2), exits.confidence(0.9))) == [3, 3, 4]


def test_score_by_hand():
  # Two examples of two answer tokens each: tokens 0, 1 of P, then tokens 1, 2.
  probs = np.concatenate([P[:, :2], P[:, 1:]], axis=1)       # tokens 0, 1 | 1, 2
  outputs = {5: {"probs": probs, "targets": np.array([1, 2, 2, 2]),
                 "example": np.array([0, 0, 1, 1]), "examples": 2}}
  depth = np.array([3, 1, 2, 4])
  r = exits.score(outputs, exits.at_depth(lambda o: depth))
  # Predictions at the chosen exits: 1, 2 | 2, 1; needed: 2, 1 | 1, 2 (token 2 first says 1 at 2).
  assert r["sequence_accuracy"] == 0.5 and r["sizes"]["5"]["sequence_accuracy"] == 0.5
  assert r["mean_depth"] == 2.5 and r["depth_std"] == pytest.approx(np.std(depth))
  assert r["needed_mean_depth"] == 1.5 and r["waste"] == 1.0
  assert r["spearman_needed"] == pytest.approx(stats.spearman(depth, np.array([2, 1, 1, 2])))


@pytest.fixture(scope="module", name="analyzed")
def analyzed_fixture(trained_run):
  workdir = trained_run("anira_o")
  return exits.analyze(runs.load_run(str(workdir))), json.loads((workdir / "eval.json").read_text())


def test_own_halting_and_forced_depths_score_as_evaluation_reports_them(analyzed):
  result, ev = analyzed
  inside = [m for m in ev["sizes"].values() if m["in_distribution"]]
  own = result["rules"]["own halting"]
  assert own["sequence_accuracy"] == pytest.approx(np.mean([m["sequence_accuracy"]
                                                            for m in inside]), abs=1e-12)
  assert own["spearman_needed"] == pytest.approx(ev["alignment"]["spearman_needed"], abs=1e-12)
  assert [s["mean_depth"] for s in own["sizes"].values()] == pytest.approx(
      [m["mean_depth"] for m in inside], abs=1e-12)
  for k in range(1, result["k_max"] + 1):
    forced = result["rules"][f"forced {k}"]
    assert forced["sequence_accuracy"] == pytest.approx(
        np.mean([m["forced_sequence_accuracy"][k - 1] for m in inside]), abs=1e-6)
    assert forced["mean_depth"] == k
  assert set(exits.RULES) < set(result["rules"])


def test_table_and_plot_show_every_rule(analyzed, tmp_path):
  result, _ = analyzed
  lines = exits.table(result).splitlines()
  assert len(lines) == 2 + len(result["rules"])
  assert all(any(line.startswith(name) for line in lines) for name in result["rules"])
  exits.plot(result, str(tmp_path / "exits.png"))
  assert (tmp_path / "exits.png").read_bytes()[:4] == b"\x89PNG"

