"""Token compaction: iterations of the shared layer that run only on the tokens still active.

The dense block recomputes every token's queries, keys and values from its current state and
updates every token. A halted token keeps its state, so its keys and values stay those computed
from the state its last update produced. Here a cache holds the projections of every token's
current state (all tokens are projected once before the loop), and an iteration
  1. attends, for every sequence holding an active token, from the cached projections
     (`model.attend` on those rows, as in the dense block), then
  2. for the active tokens only: output projection and MLP (`model.finish`), then the projections
     of their new states (`model.project`) into the cache, for the next iteration.
Each part gathers its rows (sequences, then tokens) into a buffer of the smallest of a few sizes
(`bucket_sizes`), runs the layer there and scatters back; `lax.switch` picks the size, so one
compilation serves every count. The outputs equal the dense block's up to float rounding. Only the
shared layer of the looped variants fits: a cached key would be stale for a different layer.
"""
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import ml_collections

from anira_jax import model

T = TypeVar("T")
GROWTH = 2.0  # ratio of successive bucket sizes (docs/design.md: token compaction)


class Cache(NamedTuple):
  """Queries, keys and values [B * L, H, K] of every token's current state."""
  q_NxHxK: jax.Array
  k_NxHxK: jax.Array
  v_NxHxK: jax.Array


def init_cache(cfg: ml_collections.ConfigDict, layer: model.Params, h_BxLxD: jax.Array) -> Cache:
  """The projections of every token of h (before the first iteration)."""
  B, L, _ = h_BxLxD.shape
  positions_BxL = jnp.broadcast_to(jnp.arange(L), (B, L))
  qkv = model.project(cfg, layer, h_BxLxD, positions_BxL)
  return Cache(*(x.reshape((B * L,) + x.shape[2:]) for x in qkv))


def bucket_sizes(n: int, growth: float) -> tuple[int, ...]:
  """Buffer sizes for up to n rows: 1, then each about `growth` times the last, ending at n."""
  sizes = [1]
  while sizes[-1] < n:
    sizes.append(min(n, max(sizes[-1] + 1, round(sizes[-1] * growth))))
  return tuple(sizes)


def bucketed(fn: Callable[[jax.Array], T], mask_N: jax.Array, growth: float) -> T:
  """fn(idx_S) for the smallest bucket size S >= sum(mask): idx_S lists where mask is true, in
  order, then N (out of range: gathers clip, scatters drop). The largest bucket, S = N, gets
  0..N-1 instead, so that fn can skip gathering and scattering (`_gather`, `_scatter`)."""
  N = mask_N.shape[0]
  sizes = bucket_sizes(N, growth)
  idx_N = jnp.nonzero(mask_N, size=N, fill_value=N)[0]
  branch = jnp.sum(jnp.asarray(sizes) < jnp.sum(mask_N))  # the first size >= the count
  return jax.lax.switch(branch, [lambda S=S: fn(idx_N[:S]) for S in sizes[:-1]]
                        + [lambda: fn(jnp.arange(N))])


def _gather(x_NxF: jax.Array, idx_S: jax.Array) -> jax.Array:
  if idx_S.shape[0] == x_NxF.shape[0]:  # every row, in order
    return x_NxF
  return jnp.take(x_NxF, idx_S, axis=0, mode="clip")


def _scatter(x_NxF: jax.Array, idx_S: jax.Array, y_SxF: jax.Array, mask_N: jax.Array) -> jax.Array:
  """x with the rows of y written at idx (where mask, when idx is every row)."""
  if idx_S.shape[0] == x_NxF.shape[0]:
    return jnp.where(mask_N.reshape(mask_N.shape + (1,) * (y_SxF.ndim - 1)), y_SxF, x_NxF)
  return x_NxF.at[idx_S].set(y_SxF, mode="drop")


def _attend_rows(cache: Cache, L: int, rows_B: jax.Array) -> jax.Array:
  """Attention outputs [N, H, K] of every token in the `rows_B` sequences (zero elsewhere)."""
  q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (c.reshape((-1, L) + c.shape[1:]) for c in cache)

  def attend(idx_R):
    q, k, v = (_gather(c, idx_R) for c in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))
    o_RxLxHxK = model.attend(q, k, v, jnp.broadcast_to(jnp.arange(L), q.shape[:2]))
    return _scatter(jnp.zeros_like(q_BxLxHxK), idx_R, o_RxLxHxK, rows_B)
  return bucketed(attend, rows_B, GROWTH).reshape(cache.q_NxHxK.shape)


def block(cfg: ml_collections.ConfigDict, layer: model.Params, h_BxLxD: jax.Array,
          active_BxL: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
  """`model.block` applied to the active tokens (the others keep h), and the cache of the new
  states; `cache` must hold the projections of h."""
  B, L, D = h_BxLxD.shape
  h_NxD, active_N = h_BxLxD.reshape(B * L, D), active_BxL.reshape(B * L)
  o_NxHxK = _attend_rows(cache, L, jnp.any(active_BxL, axis=1))

  def update(idx_S):
    h_SxD = model.finish(cfg, layer, _gather(h_NxD, idx_S), _gather(o_NxHxK, idx_S))
    qkv = model.project(cfg, layer, h_SxD, idx_S % L)
    return tuple(_scatter(x, idx_S, y, active_N) for x, y in zip((h_NxD, *cache), (h_SxD, *qkv)))
  h_NxD, *qkv = bucketed(update, active_N, GROWTH)
  return h_NxD.reshape(B, L, D), Cache(*qkv)
