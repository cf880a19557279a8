"""Alignment of per-token compute with per-token complexity, from evaluation token records.

All functions take the columns of `evaluate.load_records` (one row per answer token).
"""
import numpy as np


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Rank correlation; 0.0 when either side is constant (no ordering to follow)."""
  if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
    return 0.0
  # Imported here: it takes 0.8 s, which every command would otherwise pay at start-up.
  import scipy.stats  # pylint: disable=import-outside-toplevel
  return float(scipy.stats.spearmanr(x, y).statistic)


def spearman_ci(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, seed: int = 0,
                resamples: int = 200, level: float = 0.95) -> tuple[float, float, float]:
  """(rho, low, high): Spearman with a percentile bootstrap interval (see mean_spearman_ci)."""
  return mean_spearman_ci([(x, y, groups)], seed, resamples, level)


def _members(groups_N: np.ndarray | None) -> list[np.ndarray] | None:
  """The token indices of each group, in order of group id (None: no groups)."""
  if groups_N is None:
    return None
  _, inverse = np.unique(groups_N, return_inverse=True)
  return np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])


def _resample(members: list[np.ndarray] | None, size: int, rng: np.random.Generator) -> np.ndarray:
  """Indices of one bootstrap draw: whole groups with replacement (tokens when members is None)."""
  if members is None:
    return rng.integers(0, size, size)
  return np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def mean_spearman_ci(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                     seed: int = 0, resamples: int = 200,
                     level: float = 0.95) -> tuple[float, float, float]:
  """(mean rho, low, high) of the Spearman correlations of several runs, one (x, y, groups)
  each, with a percentile bootstrap interval of that mean: each draw resamples the groups (the
  examples: tokens of one example are not independent) within every run; groups None resamples
  tokens."""
  rng = np.random.default_rng(seed)
  draws_RxS = np.array([[spearman(x[i], y[i]) for i in (_resample(members, x.size, rng)
                                                         for _ in range(resamples))]
                        for x, y, members in ((x, y, _members(g)) for x, y, g in pairs)])
  tail = 100 * (1 - level) / 2
  means_S = draws_RxS.mean(axis=0)
  return (float(np.mean([spearman(x, y) for x, y, _ in pairs])),
          float(np.percentile(means_S, tail)), float(np.percentile(means_S, 100 - tail)))


def r_squared(features_NxF: np.ndarray, y_N: np.ndarray) -> float:
  """R^2 of an ordinary least-squares fit of y on the features plus an intercept."""
  if features_NxF.shape[1] == 0 or np.all(y_N == y_N[0]):
    return 0.0
  x = np.concatenate([features_NxF, np.ones((y_N.size, 1))], axis=1)
  coef, *_ = np.linalg.lstsq(x, y_N, rcond=None)
  residual = y_N - x @ coef
  return float(1.0 - residual @ residual / np.sum((y_N - y_N.mean()) ** 2))


def example_ids(records: dict[str, np.ndarray]) -> np.ndarray:
  """One id per (size, example): the unit a bootstrap resamples."""
  return records["size"].astype(np.int64) * 1_000_000 + records["example"]


def select(records: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[mask] for k, v in records.items()}


def feature_matrix(records: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
  return np.stack([records[f"feature/{n}"].astype(np.float64) for n in names], axis=1) \
      if names else np.zeros((records["depth"].size, 0))


def regression(records: dict[str, np.ndarray], feature_kinds: dict[str, str]) -> dict:
  """R^2 of depth on structural features, on execution features, on both; the added R^2 of the
  execution features over the structural ones."""
  y = records["depth"].astype(np.float64)
  structural = [n for n, k in feature_kinds.items() if k == "structural"]
  execution = [n for n, k in feature_kinds.items() if k == "execution"]
  r2 = {name: r_squared(feature_matrix(records, names), y)
        for name, names in (("structural", structural), ("execution", execution),
                            ("both", structural + execution))}
  return {**{f"r2_{k}": v for k, v in r2.items()},
          "r2_execution_added": r2["both"] - r2["structural"]}


def depth_by_value(depth_N: np.ndarray, feature_N: np.ndarray) -> dict:
  """Mean depth, its standard error and the token count at each distinct feature value."""
  values, inverse, count = np.unique(feature_N, return_inverse=True, return_counts=True)
  depth = depth_N.astype(np.float64)
  mean = np.bincount(inverse, depth) / count
  var = np.maximum(np.bincount(inverse, depth**2) / count - mean**2, 0.0)
  return {"values": values.tolist(), "mean": mean.tolist(),
          "sem": np.sqrt(var / np.maximum(count - 1, 1)).tolist(), "count": count.tolist()}
