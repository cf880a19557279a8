"""Alignment statistics: Spearman with bootstrap intervals and R^2 by feature group."""
import numpy as np
import pytest

from anira_jax import stats


def test_spearman_is_rank_correlation():
  x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  assert stats.spearman(x, x**3) == pytest.approx(1.0)
  assert stats.spearman(x, -x) == pytest.approx(-1.0)
  assert stats.spearman(x, np.array([2.0, 1.0, 4.0, 3.0, 5.0])) == pytest.approx(0.8)


def test_spearman_of_constant_is_zero():
  assert stats.spearman(np.ones(10), np.arange(10.0)) == 0.0


def test_spearman_ci_brackets_estimate():
  rng = np.random.default_rng(0)
  x = rng.normal(size=400)
  y = x + rng.normal(size=400)
  rho, low, high = stats.spearman_ci(x, y, resamples=100)
  assert low < rho < high
  assert 0.5 < rho < 0.8
  assert high - low < 0.2


def test_r_squared_exact_and_noise():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(200, 2))
  assert stats.r_squared(f, 3 * f[:, 0] - f[:, 1] + 2) == pytest.approx(1.0)
  assert stats.r_squared(f, rng.normal(size=200)) < 0.05


def test_regression_separates_feature_groups():
  rng = np.random.default_rng(1)
  n = 500
  records = {"feature/size": rng.integers(2, 9, n).astype(float),
             "feature/frontier": rng.integers(1, 5, n).astype(float)}
  records["depth"] = 2 * records["feature/frontier"]        # depth follows execution state only
  out = stats.regression(records, {"size": "structural", "frontier": "execution"})
  assert out["r2_execution"] == pytest.approx(1.0)
  assert out["r2_both"] == pytest.approx(1.0)
  assert out["r2_structural"] < 0.05
  assert out["r2_execution_added"] == pytest.approx(1.0 - out["r2_structural"])


def test_mean_spearman_ci_averages_runs_and_matches_one_run():
  rng = np.random.default_rng(2)
  x = rng.normal(size=300)
  strong, weak = x + 0.5 * rng.normal(size=300), x + 3.0 * rng.normal(size=300)
  rho, low, high = stats.mean_spearman_ci([(x, strong, None), (x, weak, None)],
                                                    resamples=100)
  assert rho == pytest.approx((stats.spearman(x, strong) + stats.spearman(x, weak)) / 2)
  assert low < rho < high
  assert stats.mean_spearman_ci([(x, strong, None)], seed=3, resamples=50) == \
      stats.spearman_ci(x, strong, seed=3, resamples=50)


def test_depth_by_value():
  depth = np.array([1, 3, 2, 2, 5])
  feature = np.array([7.0, 7.0, 1.0, 1.0, 4.0])
  table = stats.depth_by_value(depth, feature)
  assert table["values"] == [1.0, 4.0, 7.0] and table["count"] == [2, 1, 2]
  assert table["mean"] == [2.0, 5.0, 2.0]
  # Standard error of the mean: sample std / sqrt(n); 0 for a single token.
  assert table["sem"] == pytest.approx([0.0, 0.0, np.std([1, 3], ddof=1) / np.sqrt(2)])


def test_bootstrap_resamples_whole_examples():
  # Ten examples of 20 tokens each; depth follows the example, not the token. Token resampling
  # treats 200 tokens as independent and gives a narrow interval; resampling the ten examples
  # gives the honest, wider one.
  rng = np.random.default_rng(0)
  example = np.repeat(np.arange(10), 20)
  x = rng.normal(size=10)[example] + 0.1 * rng.normal(size=200)
  y = x + rng.normal(size=10)[example]
  _, low_t, high_t = stats.spearman_ci(x, y, resamples=200)
  _, low_e, high_e = stats.spearman_ci(x, y, example, resamples=200)
  assert high_e - low_e > 1.5 * (high_t - low_t)
  draw = stats._resample(stats._members(example), example.size, np.random.default_rng(1))
  counts = np.bincount(example[draw], minlength=10)
  assert set(np.unique(counts)) <= set(range(0, 201, 20))   # whole examples only
