"""Greedy autoregressive decoding with per-token adaptive depth and a key/value cache per iteration.

Teacher-forced (`recurrence.forward`), the token at position p and iteration t attends to every
earlier token's keys and values at iteration t: those the block of iteration t computes from that
token's state, its frozen state once it has halted (block input h + c_t, layer t of a stacked
core). Generation keeps them in a cache per iteration, k/v [B, K_max, H, L, Dh] (and one per
prelude layer), so that a new token runs only its own iterations and reads the rest:
  * prefill: the prompts [B, P] through the prelude and the masked-halting loop at once
    (`recurrence.offset_block` and `advance`, with a block that writes each iteration's keys and
    values: a halted token's are those of its frozen state);
  * decode: one position per row at a time, iterations 0, 1, ... until its token halts, each
    writing its own entry and reading entry t of the earlier positions;
  * after a token halts at depth N, the keys and values of its frozen state for iterations
    N..K_max-1: once, with N telling later reads where to look, when the block input does not
    depend on t (no iteration vectors, shared layer); otherwise projected for every iteration.
Readout, argmax and the next token's embedding and prelude follow, rows at their own positions
(prompts of different lengths). The whole decode is one jitted loop.

Two schedules of the decode loop, with equal outputs:
  * "lockstep": all rows decode position n together; a step runs the iterations of every row's
    token until all have halted, so a batch waits for its deepest row;
  * "depthwise": each row keeps its own (position, iteration) and a loop step applies one block
    iteration to every row at that row's own iteration (a stacked core takes each row's layer);
    a row whose token halts reads out, and the next step starts its next position at iteration 0,
    so no row idles while another is deep. Rows finish at different steps; the loop ends when
    every row has its tokens.
"""
import functools
from typing import Callable, NamedTuple, TypeVar

import chex
import jax
import jax.numpy as jnp
import ml_collections

from anira_jax import compaction, model, recurrence

SCHEDULES = ("lockstep", "depthwise")
T = TypeVar("T")


class Cache(NamedTuple):
  """Keys and values of every position: per core iteration, and per prelude layer.

  When the block input does not depend on t (`depends_on_t`), a token whose state froze at depth
  N has the same keys and values at every iteration from N on: they are kept once, in frozen_k/v,
  and iterations t >= depth_BxL read them there. Otherwise they are written at every entry
  N..K_max-1, and depth stays K_max (as for a token still running)."""
  k_BxKxHxLxDh: jax.Array
  v_BxKxHxLxDh: jax.Array
  frozen_k_BxHxLxDh: jax.Array
  frozen_v_BxHxLxDh: jax.Array
  depth_BxL: jax.Array
  prelude_k_BxPxHxLxDh: jax.Array
  prelude_v_BxPxHxLxDh: jax.Array


class Rows(NamedTuple):
  """The depthwise loop's carry: each row's token in flight and what it generated so far."""
  s: recurrence.State   # one token per row: fields [B, 1, ...], t [B] (the row's iteration)
  ctx: recurrence.Context
  cache: Cache
  position_B: jax.Array
  count_B: jax.Array    # tokens generated
  out: dict             # tokens [B, M], depth [B, M], logits [B, M, V]
  steps: jax.Array


def init_cache(cfg: ml_collections.ConfigDict, batch: int, length: int) -> Cache:
  """An empty cache; keys and values in the compute dtype, as the layers project them."""
  shape = (cfg.num_heads, length, cfg.d_model // cfg.num_heads)
  zeros = lambda *n: jnp.zeros((batch, *n) + shape, model.compute_dtype(cfg))
  return Cache(zeros(cfg.k_max), zeros(cfg.k_max), zeros(), zeros(),
               jnp.full((batch, length), cfg.k_max), zeros(cfg.prelude_layers),
               zeros(cfg.prelude_layers))


def cached_layer(cfg: ml_collections.ConfigDict, layer: model.Params, x_BxTxD: jax.Array,
                 positions_BxT: jax.Array, index: jax.Array | int, k_BxNxHxLxDh: jax.Array,
                 v_BxNxHxLxDh: jax.Array, frozen: tuple[jax.Array, ...] = (),
                 rows_B: jax.Array | None = None
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """One layer on T new tokens per row at `positions`: their keys and values are written into
  entry `index` of the caches (positions >= L write nothing), then each token attends to the
  positions up to its own, read from entry `index` (or, with `frozen` = (depth [B, L], keys,
  values [B, H, L, Dh]), from those of the positions whose depth <= index), as in the dense layer.
  `index` is one entry for all rows, or one per row [B] (then `layer` holds one layer per row
  when the core is stacked); `rows_B`: the cache rows of the tokens' rows, when not all in order
  (out of range: none). Returns (output, (k, v) caches). Writing before reading lets XLA update
  the caches in place (read first, they were copied whole at every iteration)."""
  chex.assert_shape(positions_BxT, x_BxTxD.shape[:2])
  B = x_BxTxD.shape[0]
  per_row = jnp.ndim(index) == 1
  apply = lambda fn, *args: (jax.vmap(functools.partial(fn, cfg))(layer, *args)
                             if per_row and model.variant(cfg).stacked else fn(cfg, layer, *args))
  q, k, v = apply(model.project, x_BxTxD, positions_BxT)
  if rows_B is None and per_row:
    rows_B = jnp.arange(B)
  index_Bx1 = index[:, None] if per_row else index
  at = ((jnp.arange(B) if rows_B is None else rows_B)[:, None], index_Bx1, slice(None),
        positions_BxT)
  k_BxNxHxLxDh = k_BxNxHxLxDh.at[at].set(k, mode="drop")
  v_BxNxHxLxDh = v_BxNxHxLxDh.at[at].set(v, mode="drop")

  rows = (lambda x: x) if rows_B is None else (lambda x: jnp.take(x, rows_B, axis=0, mode="clip"))

  def read(c_BxNxHxLxDh, frozen_BxHxLxDh=None):
    c_BxHxLxDh = c_BxNxHxLxDh[slice(None) if rows_B is None else rows_B, index]
    if frozen:
      c_BxHxLxDh = jnp.where((index_Bx1 >= rows(frozen[0]))[:, None, :, None],
                             rows(frozen_BxHxLxDh), c_BxHxLxDh)
    return jnp.swapaxes(c_BxHxLxDh, 1, 2)
  o = model.attend(q, read(k_BxNxHxLxDh, *frozen[1:2]), read(v_BxNxHxLxDh, *frozen[2:]),
                   positions_BxT)
  return apply(model.finish, x_BxTxD, o), (k_BxNxHxLxDh, v_BxNxHxLxDh)


def _layer_at(cfg: ml_collections.ConfigDict, params: model.Params, t: jax.Array) -> model.Params:
  """The core's layer of iteration t (as in `model.block`)."""
  core = params["core"]
  return jax.tree.map(lambda p: jnp.asarray(p)[t], core) if model.variant(cfg).stacked else core


def _prelude(cfg: ml_collections.ConfigDict, params: model.Params, tokens_BxT: jax.Array,
             positions_BxT: jax.Array, k_BxPxHxLxDh: jax.Array, v_BxPxHxLxDh: jax.Array,
             rows_B: jax.Array | None = None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Embedding and prelude of new tokens (of the cache rows `rows_B`, as in `cached_layer`):
  (output, the prelude's caches with their keys and values)."""
  x = model.embed(cfg.model, params, tokens_BxT)
  for i, layer in enumerate(params["prelude"]):
    x, (k_BxPxHxLxDh, v_BxPxHxLxDh) = cached_layer(cfg.model, layer, x, positions_BxT, i,
                                                   k_BxPxHxLxDh, v_BxPxHxLxDh, rows_B=rows_B)
  return x, (k_BxPxHxLxDh, v_BxPxHxLxDh)


def iterate(cfg: ml_collections.ConfigDict, params: model.Params, ctx: recurrence.Context,
            positions_BxT: jax.Array, s: recurrence.State,
            cache: Cache) -> tuple[recurrence.State, Cache]:
  """`recurrence.step` on T new tokens per row, the block reading and writing cache[s.t]."""
  layer = _layer_at(cfg.model, params, s.t)
  frozen = (cache.depth_BxL, cache.frozen_k_BxHxLxDh, cache.frozen_v_BxHxLxDh)
  h_new, (k, v) = recurrence.offset_block(
      lambda x: cached_layer(cfg.model, layer, x, positions_BxT, s.t, cache.k_BxKxHxLxDh,
                             cache.v_BxKxHxLxDh, frozen), params, ctx, s)
  return (recurrence.advance(cfg, params, ctx, s, h_new),
          cache._replace(k_BxKxHxLxDh=k, v_BxKxHxLxDh=v))


def _on_rows(pending_B: jax.Array, chunk: int, fn: Callable[[jax.Array, T], T], carry: T) -> T:
  """carry after fn(idx_C, carry) over the pending rows, in order: all at once (C = B) when more
  than half are pending, else `chunk` at a time, as many times as needed (none when no row is
  pending); idx is padded with B (no row: gathers clip, scatters drop). Loops of 0 or more trips
  rather than lax.cond, which copies the caches in and out."""
  B = pending_B.shape[0]
  count = jnp.sum(pending_B)
  order_N = jnp.nonzero(pending_B, size=B + chunk, fill_value=B)[0]

  def trips(size: int) -> Callable[[jax.Array, T], T]:
    return lambda i, carry: fn(jax.lax.dynamic_slice_in_dim(order_N, i * size, size), carry)
  together = (2 * count > B).astype(jnp.int32)
  carry = jax.lax.fori_loop(0, together, trips(B), carry)
  return jax.lax.fori_loop(0, (1 - together) * (-(-count // chunk)), trips(chunk), carry)


def iterate_active(cfg: ml_collections.ConfigDict, params: model.Params, ctx: recurrence.Context,
                   positions_Bx1: jax.Array, s: recurrence.State, cache: Cache,
                   chunk: int) -> tuple[recurrence.State, Cache]:
  """`iterate` on one token per row, the block run only on the rows whose token is still active
  (`_on_rows`). A halted row's entry t is not written: no later read takes it (reads from its
  depth on take the frozen keys and values, stored once the position is done)."""
  B = positions_Bx1.shape[0]
  layer = _layer_at(cfg.model, params, s.t)
  c = recurrence.block_offset(params, ctx, s.t)
  frozen = (cache.depth_BxL, cache.frozen_k_BxHxLxDh, cache.frozen_v_BxHxLxDh)

  def run(idx_C: jax.Array, carry: tuple[jax.Array, Cache]) -> tuple[jax.Array, Cache]:
    h_new_Bx1xD, cache = carry
    take = lambda x: jnp.take(x, idx_C, axis=0, mode="clip")
    h_Cx1xD, (k, v) = recurrence.with_offset(
        lambda x: cached_layer(cfg.model, layer, x, take(positions_Bx1), s.t, cache.k_BxKxHxLxDh,
                               cache.v_BxKxHxLxDh, frozen, idx_C),
        take(s.h_BxLxD), None if c is None else (take(c) if c.shape[0] == B else c))
    return (h_new_Bx1xD.at[idx_C].set(h_Cx1xD, mode="drop"),
            cache._replace(k_BxKxHxLxDh=k, v_BxKxHxLxDh=v))
  h_new, cache = _on_rows(~s.halted_BxL[:, 0], chunk, run, (s.h_BxLxD, cache))
  return recurrence.advance(cfg, params, ctx, s, h_new), cache


def depends_on_t(cfg: ml_collections.ConfigDict) -> bool:
  """Whether a frozen state's keys and values change with the iteration."""
  return model.variant(cfg).stacked or cfg.iteration_embedding


def fill_frozen(cfg: ml_collections.ConfigDict, params: model.Params, ctx: recurrence.Context,
                h_BxTxD: jax.Array, positions_BxT: jax.Array, depth_BxT: jax.Array,
                cache: Cache, rows_B: jax.Array | None = None) -> Cache:
  """The cache after tokens of its rows `rows_B` (default: all, in order; indices out of range
  write nothing) froze with states h at depths N (tokens with N = 0 or K_max are left alone):
  their keys and values for the iterations from N on, into frozen_k/v (and N into depth), or into
  every entry N..K_max-1 when they depend on the iteration. Nothing is computed when no token
  froze before K_max."""
  k_max, L = cfg.model.k_max, cache.k_BxKxHxLxDh.shape[3]
  froze_BxT = (depth_BxT > 0) & (depth_BxT < k_max)
  rows_Bx1 = (jnp.arange(h_BxTxD.shape[0]) if rows_B is None else rows_B)[:, None]

  def kv(t):
    c = recurrence.block_offset(params, ctx, t)
    return model.project(cfg.model, _layer_at(cfg.model, params, t),
                         h_BxTxD if c is None else h_BxTxD + c, positions_BxT)[1:]
  if depends_on_t(cfg.model):
    new = lambda: jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), jax.vmap(kv)(jnp.arange(k_max)))
    t_1xKx1 = jnp.arange(k_max)[None, :, None]
    later_BxKxT = froze_BxT[:, None] & (t_1xKx1 >= depth_BxT[:, None])
    at = (rows_Bx1[..., None], t_1xKx1, slice(None),
          jnp.where(later_BxKxT, positions_BxT[:, None], L))    # L: nowhere
    names = ("k_BxKxHxLxDh", "v_BxKxHxLxDh")
  else:
    new = lambda: kv(jnp.zeros((), jnp.int32))
    at = (rows_Bx1, slice(None), jnp.where(froze_BxT, positions_BxT, L))
    names = ("frozen_k_BxHxLxDh", "frozen_v_BxHxLxDh")
    cache = cache._replace(depth_BxL=cache.depth_BxL.at[at[0], at[2]].set(depth_BxT, mode="drop"))
  k, v = jax.lax.cond(jnp.any(froze_BxT), new, lambda: jax.tree.map(
      lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(new)))
  return cache._replace(**{name: getattr(cache, name).at[at].set(x, mode="drop")
                           for name, x in zip(names, (k, v))})


def _record_projections(cache: Cache, t: jax.Array, projections: compaction.Cache) -> Cache:
  """`cache` with entry t holding the keys and values compaction keeps for the tokens at
  positions 0..L-1 of every row (projections [B * L, H, Dh])."""
  L = projections.k_NxHxK.shape[0] // cache.k_BxKxHxLxDh.shape[0]
  k, v = (jnp.swapaxes(x.reshape((-1, L) + x.shape[1:]), 1, 2) for x in projections[1:])
  return cache._replace(k_BxKxHxLxDh=cache.k_BxKxHxLxDh.at[:, t, :, :L].set(k),
                        v_BxKxHxLxDh=cache.v_BxKxHxLxDh.at[:, t, :, :L].set(v))


def run_tokens(cfg: ml_collections.ConfigDict, params: model.Params, tokens_BxT: jax.Array,
               positions_BxT: jax.Array, valid_BxT: jax.Array, cache: Cache,
               halt_at: jax.Array | None,
               compact: int = 0) -> tuple[jax.Array, recurrence.State, Cache]:
  """T new tokens per row through the whole model (the prefill, or one lock-step position):
  (logits [B, T, V], final state, cache with the tokens' keys and values). Every iteration of the
  loop writes every token's entry, of its frozen state once halted; `fill_frozen` then stores
  the frozen keys and values for the later iterations. `compact` (> 0) runs the block only on
  what is still active: on the prompt tokens (at positions 0..T-1, T > 1:
  `recurrence.compact_loop`, each entry written from the projections it keeps), or on the rows,
  `compact` at a time (one token per row: `iterate_active`)."""
  h0, prelude_kv = _prelude(cfg, params, tokens_BxT, positions_BxT, *cache[5:])
  cache = cache._replace(prelude_k_BxPxHxLxDh=prelude_kv[0], prelude_v_BxPxHxLxDh=prelude_kv[1])
  ctx, s = recurrence.begin(cfg, params, h0, valid_BxT, halt_at)
  if compact and tokens_BxT.shape[1] > 1:
    s, cache = recurrence.compact_loop(cfg, params, ctx, s, cache, _record_projections)
  else:
    step = (functools.partial(iterate_active, chunk=compact) if compact else iterate)
    s, cache = jax.lax.while_loop(lambda c: ~jnp.all(c[0].halted_BxL),
                                  lambda c: step(cfg, params, ctx, positions_BxT, *c), (s, cache))
  cache = fill_frozen(cfg, params, ctx, s.h_BxLxD, positions_BxT, s.depth_BxL, cache)
  return recurrence.output_logits(cfg, params, s.out_BxLxO), s, cache


def _record(out: dict, column_B: jax.Array, logits_BxV: jax.Array, depth_B: jax.Array) -> dict:
  """`out` with each row's greedy token, depth and logits at its column (none where column = M)."""
  rows_B = jnp.arange(logits_BxV.shape[0])
  put = lambda buf, x: buf.at[rows_B, column_B].set(x, mode="drop")
  return {"tokens": put(out["tokens"], jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)),
          "depth": put(out["depth"], depth_B), "logits": put(out["logits"], logits_BxV)}


def _decode_lockstep(cfg: ml_collections.ConfigDict, params: model.Params, lengths_B: jax.Array,
                     out: dict, cache: Cache, halt_at: jax.Array | None,
                     compact: int) -> tuple[dict, jax.Array]:
  """Positions 1..M-1 of every row together: (outputs, iterations run); `compact` as in
  `run_tokens`."""
  B, M = out["tokens"].shape

  def body(n, carry):
    out, cache, steps = carry
    position_Bx1 = (lengths_B - 1 + n)[:, None]
    tokens_Bx1 = jax.lax.dynamic_slice_in_dim(out["tokens"], n - 1, 1, axis=1)
    logits, s, cache = run_tokens(cfg, params, tokens_Bx1, position_Bx1, jnp.ones((B, 1), bool),
                                  cache, halt_at, compact)
    out = _record(out, jnp.full((B,), n), logits[:, 0], s.depth_BxL[:, 0])
    return out, cache, steps + s.t
  out, _, steps = jax.lax.fori_loop(1, M, body, (out, cache, jnp.zeros((), jnp.int32)))
  return out, steps


def _iterate_rows(cfg: ml_collections.ConfigDict, params: model.Params, s: recurrence.State,
                  ctx: recurrence.Context, position_B: jax.Array,
                  cache: Cache) -> tuple[recurrence.State, Cache]:
  """`iterate` on every row's token at that row's own iteration (s.t [B]): the block offset and
  the halting of each row as a batch of one (`jax.vmap`), the layer on all rows at once (vmapping
  it too made XLA transpose every row's keys and values before the attention, a fifth of a step
  at batch 64)."""
  lift = lambda x: x[None]   # a row as a batch of one
  row_ctx = lambda ctx: recurrence.Context(*jax.tree.map(lift, ctx[:2]), ctx.halt_at)
  ctx_axes = recurrence.Context(0, None if ctx.inject_BxLxD is None else 0, None)
  c = jax.vmap(lambda ctx, t: recurrence.block_offset(params, row_ctx(ctx), t),
               in_axes=(ctx_axes, 0))(ctx, s.t)
  c_Bx1xD = None if c is None else c.reshape(s.h_BxLxD.shape[:1] + c.shape[-2:])
  frozen = (cache.depth_BxL, cache.frozen_k_BxHxLxDh, cache.frozen_v_BxHxLxDh)
  h_new, (k, v) = recurrence.with_offset(
      lambda x: cached_layer(cfg.model, _layer_at(cfg.model, params, s.t), x, position_B[:, None],
                             s.t, cache.k_BxKxHxLxDh, cache.v_BxKxHxLxDh, frozen),
      s.h_BxLxD, c_Bx1xD)

  def advance(ctx, s, h):
    s1 = jax.tree.map(lift, s._replace(t=None))._replace(t=s.t)
    s1 = recurrence.advance(cfg, params, row_ctx(ctx), s1, lift(h))
    return jax.tree.map(lambda x: x[0], s1._replace(t=None))._replace(t=s1.t)
  return (jax.vmap(advance, in_axes=(ctx_axes, 0, 0))(ctx, s, h_new),
          cache._replace(k_BxKxHxLxDh=k, v_BxKxHxLxDh=v))


def _pick(mask_B: jax.Array, new, old):
  """Rows of the pytree `new` where mask, of `old` elsewhere."""
  return jax.tree.map(lambda n, o: jnp.where(mask_B.reshape(mask_B.shape + (1,) * (n.ndim - 1)),
                                             n, o), new, old)


def _restart(cfg: ml_collections.ConfigDict, params: model.Params, rows: Rows, pending_B: jax.Array,
             chunk: int) -> Rows:
  """The rows whose token halted, each at iteration 0 of its next position with the token it
  generated; their frozen keys and values stored first. `_on_rows`: `chunk` rows at a time, or
  all at once when more than half are pending (with forced depths every row halts together)."""
  take = lambda tree, idx: jax.tree.map(lambda x: jnp.take(x, idx, axis=0, mode="clip"), tree)
  put = lambda tree, idx, new: jax.tree.map(lambda x, y: x.at[idx].set(y, mode="drop"), tree, new)

  def restart(idx_C: jax.Array, rows: Rows) -> Rows:
    s, ctx, position_C, count_C = take((rows.s, rows.ctx[:2], rows.position_B, rows.count_B), idx_C)
    ctx = recurrence.Context(*ctx, rows.ctx.halt_at)
    cache = fill_frozen(cfg, params, ctx, s.h_BxLxD, position_C[:, None], s.depth_BxL,
                        rows.cache, idx_C)
    tokens_Cx1 = jnp.take_along_axis(take(rows.out["tokens"], idx_C), count_C[:, None] - 1, axis=1)
    position_C = position_C + 1
    h0, prelude_kv = _prelude(cfg, params, tokens_Cx1, position_C[:, None], *cache[5:], idx_C)
    cache = cache._replace(prelude_k_BxPxHxLxDh=prelude_kv[0], prelude_v_BxPxHxLxDh=prelude_kv[1])
    ctx_C, fresh = recurrence.begin(cfg, params, h0, jnp.ones(h0.shape[:2], bool),
                                    rows.ctx.halt_at)
    fresh = fresh._replace(t=jnp.zeros_like(position_C))
    s, ctx2, position_B = put((rows.s, rows.ctx[:2], rows.position_B), idx_C,
                              (fresh, ctx_C[:2], position_C))
    return rows._replace(s=s, ctx=recurrence.Context(*ctx2, rows.ctx.halt_at), cache=cache,
                         position_B=position_B)
  return _on_rows(pending_B, chunk, restart, rows)


def _decode_depthwise(cfg: ml_collections.ConfigDict, params: model.Params, lengths_B: jax.Array,
                      out: dict, cache: Cache, halt_at: jax.Array | None,
                      chunk: int) -> tuple[dict, jax.Array]:
  """Positions 1..M-1, each row at its own position and iteration: (outputs, steps run). A step
  restarts the rows whose token halted (`_restart`), then runs one iteration on every row."""
  B, M = out["tokens"].shape

  def body(rows: Rows) -> Rows:
    rows = _restart(cfg, params, rows, rows.s.halted_BxL[:, 0] & (rows.count_B < M), chunk)
    running_B = rows.count_B < M
    s, cache = _iterate_rows(cfg, params, rows.s, rows.ctx, rows.position_B, rows.cache)
    halted_B = s.halted_BxL[:, 0] & running_B
    out = _record(rows.out, jnp.where(halted_B, rows.count_B, M),
                  recurrence.output_logits(cfg, params, s.out_BxLxO)[:, 0], s.depth_BxL[:, 0])
    return rows._replace(s=_pick(running_B, s, rows.s), cache=cache,
                         count_B=rows.count_B + halted_B, out=out, steps=rows.steps + 1)

  # Every row starts halted (depth 0: nothing to store) at its last prompt position, so the first
  # step starts its next token.
  ctx, s = recurrence.begin(cfg, params, jnp.zeros((B, 1, cfg.model.d_model)),
                            jnp.zeros((B, 1), bool), halt_at)
  rows = Rows(s._replace(t=jnp.zeros((B,), jnp.int32)), ctx, cache, lengths_B - 1,
              jnp.ones((B,), jnp.int32), out, jnp.zeros((), jnp.int32))
  rows = jax.lax.while_loop(lambda r: jnp.any(r.count_B < M), body, rows)
  return rows.out, rows.steps


def generate(cfg: ml_collections.ConfigDict, params: model.Params, prompts_BxP: jax.Array,
             lengths_B: jax.Array, max_new_tokens: int, schedule: str = "lockstep",
             halt_at: jax.Array | None = None, chunk: int = 8, compact: bool = False) -> dict:
  """Greedy continuation of right-padded prompts (row b: prompts[b, :lengths[b]]) by
  max_new_tokens tokens: {"tokens" [B, M], "depth" [B, M] (block applications of the position
  that produced each token), "logits" [B, M, V], "iterations" (block iterations run one after
  another: "prefill_iterations" then "decode_iterations")}. `halt_at` = k: every token halts at
  iteration k. `chunk`: rows restarted together in a depth-wise step (`_restart`), or run together
  in a compacted lock-step iteration. `compact`: the block runs only on the prompt tokens still
  active in the prefill, and on the rows still active at each lock-step position (`run_tokens`):
  the same outputs up to float rounding."""
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
  B, P = prompts_BxP.shape
  M = max_new_tokens
  chunk = min(B, chunk)
  cache = init_cache(cfg.model, B, P + M - 1)
  positions_BxP = jnp.broadcast_to(jnp.arange(P), (B, P))
  logits, s, cache = run_tokens(cfg, params, prompts_BxP, positions_BxP,
                                positions_BxP < lengths_B[:, None], cache, halt_at,
                                chunk if compact else 0)
  rows_B, last_B = jnp.arange(B), lengths_B - 1
  V = logits.shape[-1]
  out = {"tokens": jnp.zeros((B, M), jnp.int32), "depth": jnp.zeros((B, M), jnp.int32),
         "logits": jnp.zeros((B, M, V), logits.dtype)}
  out = _record(out, jnp.zeros((B,), jnp.int32), logits[rows_B, last_B],
                s.depth_BxL[rows_B, last_B])
  if schedule == "lockstep" or B == 1:   # one row: the same schedule, in the simpler loop
    # One row has no other rows to skip: its loop ends when its token halts.
    out, steps = _decode_lockstep(cfg, params, lengths_B, out, cache, halt_at,
                                  chunk if compact and B > 1 else 0)
  else:
    out, steps = _decode_depthwise(cfg, params, lengths_B, out, cache, halt_at, chunk)
  return {**out, "iterations": s.t + steps, "prefill_iterations": s.t, "decode_iterations": steps}
