"""compaction.py: bucket sizes, the bucketed gather, and the compacted block against the dense one.
The whole compacted recurrence against the dense drivers is in test_recurrence.py."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_params, tiny_config

from anira_jax import compaction, model


@pytest.mark.parametrize("n,growth", [(1, 2.0), (7, 2.0), (64, 2.0), (100, 1.5), (1024, 1.25)])
def test_bucket_sizes_grow_geometrically_to_n(n, growth):
  sizes = compaction.bucket_sizes(n, growth)
  assert sizes[0] == 1 and sizes[-1] == n
  assert all(a < b <= max(a + 1, round(a * growth)) for a, b in itertools.pairwise(sizes))
  if (n, growth) == (64, 2.0):
    assert sizes == (1, 2, 4, 8, 16, 32, 64)


@pytest.mark.parametrize("count", [0, 1, 3, 5, 8, 11, 12])
def test_bucketed_passes_the_true_indices_in_the_smallest_bucket(count):
  N = 12
  mask = np.zeros(N, bool)
  mask[np.random.default_rng(count).choice(N, count, replace=False)] = True
  fn = lambda idx: (idx.shape[0], jnp.pad(idx, (0, N - idx.shape[0]), constant_values=-1))
  size, idx = jax.jit(lambda m: compaction.bucketed(fn, m, 2.0))(mask)
  size = int(size)
  assert size == min(s for s in compaction.bucket_sizes(N, 2.0) if s >= count)
  if size == N:   # the largest bucket: every position
    np.testing.assert_array_equal(idx, np.arange(N))
  else:           # where the mask holds, in order, then out-of-range padding
    np.testing.assert_array_equal(idx[:count], np.flatnonzero(mask))
    np.testing.assert_array_equal(idx[count:size], N)


def _case(seed: int, fraction: float, positions: str = "rope"):
  cfg = tiny_config("anira_o", model__positions=positions)
  layer = random_params(cfg, seed=seed)["core"]
  h = jax.random.normal(jax.random.key(seed), (4, 7, cfg.model.d_model))
  active = jax.random.bernoulli(jax.random.key(seed + 1), fraction, (4, 7))
  return cfg.model, layer, h, active


def _dense(cfg, layer, h, active):
  """What the dense recurrence does in one iteration: new states for the active tokens only."""
  return jnp.where(active[..., None], model.block(cfg, {"core": layer}, h, 0), h)


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.95, 1.0])   # small buckets ... every token
@pytest.mark.parametrize("positions", ["rope", "none"])
def test_block_equals_dense_block_and_caches_the_new_projections(fraction, positions):
  cfg, layer, h, active = _case(0, fraction, positions)
  block = jax.jit(lambda h, a, c: compaction.block(cfg, layer, h, a, c))
  got, cache = block(h, active, compaction.init_cache(cfg, layer, h))
  np.testing.assert_allclose(got, _dense(cfg, layer, h, active), atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(got)[~np.asarray(active)],
                                np.asarray(h)[~np.asarray(active)])
  for c, expected in zip(cache, compaction.init_cache(cfg, layer, got)):
    np.testing.assert_allclose(c, expected, atol=1e-5, rtol=1e-5)


def test_successive_blocks_equal_dense_iterations():
  """Two iterations, the second on a subset of the first's tokens, as the recurrence runs them."""
  cfg, layer, h, active = _case(1, 0.6)
  fewer = active & jax.random.bernoulli(jax.random.key(7), 0.5, active.shape)
  assert 0 < int(fewer.sum()) < int(active.sum())
  block = jax.jit(lambda h, a, c: compaction.block(cfg, layer, h, a, c))
  h1, cache = block(h, active, compaction.init_cache(cfg, layer, h))
  h2, _ = block(h1, fewer, cache)
  dense = _dense(cfg, layer, _dense(cfg, layer, h, active), fewer)
  np.testing.assert_allclose(h2, dense, atol=1e-5, rtol=1e-5)


def test_halted_tokens_keys_come_from_the_cache():
  """Poisoning the cached queries of halted tokens changes nothing (never read); poisoning their
  keys does (read from the cache, not recomputed)."""
  cfg, layer, h, active = _case(2, 0.4)
  block = jax.jit(lambda h, a, c: compaction.block(cfg, layer, h, a, c))
  cache = compaction.init_cache(cfg, layer, h)
  expected, _ = block(h, active, cache)
  halted = ~np.asarray(active).reshape(-1)[:, None, None]
  poison = lambda x: jnp.where(halted, jnp.nan, x)
  np.testing.assert_array_equal(block(h, active, cache._replace(q_NxHxK=poison(cache.q_NxHxK)))[0],
                                expected)
  assert np.isnan(block(h, active, cache._replace(k_NxHxK=poison(cache.k_NxHxK)))[0]).any()
