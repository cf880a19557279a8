"""Greedy autoregressive decoding with per-token adaptive depth and a key/value cache per iteration.

Teacher-forced (`recurrence.forward`), the token at position p and iteration t attends to every
earlier token's keys and values at iteration t: those the block of iteration t computes from that
token's state, its frozen state once it has halted (block input h + c_t, layer t of a stacked
core). Generation keeps them in a cache per iteration, k/v [K_max, B, L, H, Dh] (and one per
prelude layer), so that a new token runs only its own iterations and reads the rest:
  * prefill: the prompts [B, P] through the prelude and the masked-halting loop at once
    (`recurrence.offset_block` and `advance`, with a block that writes each iteration's keys and
    values), then the frozen states' keys and values for the iterations after the loop;
  * decode: one position per row at a time, iterations 0, 1, ... until its token halts, each
    reading cache[t] of the earlier positions and writing its own entry; once it halts, the keys
    and values of its frozen state fill iterations depth..K_max-1 of its position (projected once
    when the block input does not depend on t, once per iteration otherwise).
Readout, argmax and the next token's embedding and prelude follow, rows at their own positions
(prompts of different lengths). The whole decode is one jitted loop.

Two schedules of the decode loop, with equal outputs:
  * "lockstep": all rows decode position n together; a step runs the iterations of every row's
    token until all have halted, so a batch waits for its deepest row;
  * "depthwise": each row keeps its own (position, iteration) and a loop step applies one block
    iteration to every row at that row's own iteration (`jax.vmap` of the single-row step; a
    stacked core takes each row's layer); a row whose token halts reads out and starts its next
    position at iteration 0 the next step, so no row idles while another is deep.
"""
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import ml_collections

from anira_jax import model, recurrence

SCHEDULES = ("lockstep", "depthwise")


class Cache(NamedTuple):
  """Keys and values of every position: per core iteration, and per prelude layer."""
  k_KxBxLxHxDh: jax.Array
  v_KxBxLxHxDh: jax.Array
  prelude_k_PxBxLxHxDh: jax.Array
  prelude_v_PxBxLxHxDh: jax.Array


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
  heads, head_dim = cfg.num_heads, cfg.d_model // cfg.num_heads
  zeros = lambda n: jnp.zeros((n, batch, length, heads, head_dim))
  return Cache(zeros(cfg.k_max), zeros(cfg.k_max), zeros(cfg.prelude_layers),
               zeros(cfg.prelude_layers))


def cached_layer(cfg: ml_collections.ConfigDict, layer: model.Params, x_BxTxD: jax.Array,
                 positions_BxT: jax.Array, index: jax.Array, k_NxBxLxHxDh: jax.Array,
                 v_NxBxLxHxDh: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """One layer on T tokens per row at `positions`: their keys and values written into entry
  `index` of the cache (positions >= L write nothing), then attention to that entry's positions up
  to each token's own, as in the dense layer. Returns (output, (k, v) caches)."""
  chex.assert_shape(positions_BxT, x_BxTxD.shape[:2])
  q, k, v = model.project(cfg, layer, x_BxTxD, positions_BxT)
  rows_Bx1 = jnp.arange(x_BxTxD.shape[0])[:, None]
  k_NxBxLxHxDh = k_NxBxLxHxDh.at[index, rows_Bx1, positions_BxT].set(k, mode="drop")
  v_NxBxLxHxDh = v_NxBxLxHxDh.at[index, rows_Bx1, positions_BxT].set(v, mode="drop")
  o = model.attend(q, k_NxBxLxHxDh[index], v_NxBxLxHxDh[index], positions_BxT)
  return model.finish(cfg, layer, x_BxTxD, o), (k_NxBxLxHxDh, v_NxBxLxHxDh)


def _layer_at(cfg: ml_collections.ConfigDict, params: model.Params, t: jax.Array) -> model.Params:
  """The core's layer of iteration t (as in `model.block`)."""
  core = params["core"]
  return jax.tree.map(lambda p: jnp.asarray(p)[t], core) if model.variant(cfg).stacked else core


def _prelude(cfg: ml_collections.ConfigDict, params: model.Params, tokens_BxT: jax.Array,
             positions_BxT: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
  """Embedding and prelude of new tokens, reading and writing the prelude's cache."""
  x, k, v = model.embed(params, tokens_BxT), cache.prelude_k_PxBxLxHxDh, cache.prelude_v_PxBxLxHxDh
  for i, layer in enumerate(params["prelude"]):
    x, (k, v) = cached_layer(cfg.model, layer, x, positions_BxT, i, k, v)
  return x, cache._replace(prelude_k_PxBxLxHxDh=k, prelude_v_PxBxLxHxDh=v)


def _context(cfg: ml_collections.ConfigDict, params: model.Params, h0_BxTxD: jax.Array,
             halt_at: jax.Array | None) -> recurrence.Context:
  """What the recurrence of tokens with prelude output h0 reads (as `recurrence.forward`)."""
  early = (model.halt_logits(params, h0_BxTxD) if model.variant(cfg.model).halting == "early"
           else jnp.zeros(h0_BxTxD.shape[:2] + (cfg.model.k_max,)))
  return recurrence.Context(early, h0_BxTxD if cfg.model.input_injection else None, halt_at)


def _init_state(cfg: ml_collections.ConfigDict, params: model.Params, h0_BxTxD: jax.Array,
                valid_BxT: jax.Array) -> recurrence.State:
  out_dim = (model.vocab_size(params) if cfg.halting.output == "distribution"
             else h0_BxTxD.shape[-1])
  return recurrence.init_state(h0_BxTxD, valid_BxT, cfg.model.k_max, out_dim)


def output_logits(cfg: ml_collections.ConfigDict, params: model.Params,
                  out_BxTxO: jax.Array) -> jax.Array:
  """Logits from the halting mixture (as `recurrence.forward`)."""
  if cfg.halting.output == "distribution":
    return jnp.log(jnp.maximum(out_BxTxO, recurrence.TINY))
  return model.readout(params, out_BxTxO)


def iterate(cfg: ml_collections.ConfigDict, params: model.Params, ctx: recurrence.Context,
            positions_BxT: jax.Array, s: recurrence.State,
            cache: Cache) -> tuple[recurrence.State, Cache]:
  """`recurrence.step` on T tokens per row, the block reading and writing cache[s.t]."""
  layer = _layer_at(cfg.model, params, s.t)
  block = lambda x: cached_layer(cfg.model, layer, x, positions_BxT, s.t, cache.k_KxBxLxHxDh,
                                 cache.v_KxBxLxHxDh)
  h_new, (k, v) = recurrence.offset_block(block, params, ctx, s)
  return (recurrence.advance(cfg, params, ctx, s, h_new),
          cache._replace(k_KxBxLxHxDh=k, v_KxBxLxHxDh=v))


def depends_on_t(cfg: ml_collections.ConfigDict) -> bool:
  """Whether a frozen state's keys and values change with the iteration."""
  return model.variant(cfg).stacked or cfg.iteration_embedding


def fill_frozen(cfg: ml_collections.ConfigDict, params: model.Params, ctx: recurrence.Context,
                h_BxTxD: jax.Array, positions_BxT: jax.Array, first_B: jax.Array,
                cache: Cache) -> Cache:
  """Writes the keys and values of the frozen states h at iterations first_B[b]..K_max-1 of each
  row's positions (nothing for a row with first = K_max)."""
  k_max = cfg.model.k_max
  rows_Bx1 = jnp.arange(h_BxTxD.shape[0])[:, None]

  def kv(t):
    c = recurrence.block_offset(params, ctx, t)
    return model.project(cfg.model, _layer_at(cfg.model, params, t),
                         h_BxTxD if c is None else h_BxTxD + c, positions_BxT)[1:]

  def fill(cache):
    if depends_on_t(cfg.model):
      k, v = jax.vmap(kv)(jnp.arange(k_max))
    else:
      k, v = (jnp.broadcast_to(x, (k_max,) + x.shape) for x in kv(jnp.zeros((), jnp.int32)))
    later_KxBx1x1x1 = (jnp.arange(k_max)[:, None] >= first_B[None, :])[:, :, None, None, None]
    write = lambda c, new: c.at[:, rows_Bx1, positions_BxT].set(
        jnp.where(later_KxBx1x1x1, new, c[:, rows_Bx1, positions_BxT]), mode="drop")
    return cache._replace(k_KxBxLxHxDh=write(cache.k_KxBxLxHxDh, k),
                          v_KxBxLxHxDh=write(cache.v_KxBxLxHxDh, v))
  return jax.lax.cond(jnp.any(first_B < k_max), fill, lambda c: c, cache)


def run_tokens(cfg: ml_collections.ConfigDict, params: model.Params, tokens_BxT: jax.Array,
               positions_BxT: jax.Array, valid_BxT: jax.Array, cache: Cache,
               halt_at: jax.Array | None) -> tuple[jax.Array, recurrence.State, Cache]:
  """T new tokens per row through the whole model (the prefill, or one lock-step position):
  (logits [B, T, V], final state, cache with every iteration's keys and values of the tokens)."""
  h0, cache = _prelude(cfg, params, tokens_BxT, positions_BxT, cache)
  ctx = _context(cfg, params, h0, halt_at)
  s, cache = jax.lax.while_loop(lambda c: ~jnp.all(c[0].halted_BxL),
                                lambda c: iterate(cfg, params, ctx, positions_BxT, *c),
                                (_init_state(cfg, params, h0, valid_BxT), cache))
  first_B = jnp.broadcast_to(s.t, tokens_BxT.shape[:1])
  cache = fill_frozen(cfg, params, ctx, s.h_BxLxD, positions_BxT, first_B, cache)
  return output_logits(cfg, params, s.out_BxLxO), s, cache


def _record(out: dict, column_B: jax.Array, logits_BxV: jax.Array, depth_B: jax.Array) -> dict:
  """`out` with each row's greedy token, depth and logits at its column (none where column = M)."""
  rows_B = jnp.arange(logits_BxV.shape[0])
  put = lambda buf, x: buf.at[rows_B, column_B].set(x, mode="drop")
  return {"tokens": put(out["tokens"], jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)),
          "depth": put(out["depth"], depth_B), "logits": put(out["logits"], logits_BxV)}


def _decode_lockstep(cfg: ml_collections.ConfigDict, params: model.Params, lengths_B: jax.Array,
                     out: dict, cache: Cache, halt_at: jax.Array | None) -> tuple[dict, jax.Array]:
  """Positions 1..M-1 of every row together: (outputs, loop iterations)."""
  B, M = out["tokens"].shape

  def body(n, carry):
    out, cache, steps = carry
    position_Bx1 = (lengths_B - 1 + n)[:, None]
    tokens_Bx1 = jax.lax.dynamic_slice_in_dim(out["tokens"], n - 1, 1, axis=1)
    logits, s, cache = run_tokens(cfg, params, tokens_Bx1, position_Bx1,
                                  jnp.ones((B, 1), bool), cache, halt_at)
    out = _record(out, jnp.full((B,), n), logits[:, 0], s.depth_BxL[:, 0])
    return out, cache, steps + s.t
  out, _, steps = jax.lax.fori_loop(1, M, body, (out, cache, jnp.zeros((), jnp.int32)))
  return out, steps


def _start(cfg: ml_collections.ConfigDict, params: model.Params, tokens_B: jax.Array,
           position_B: jax.Array, cache: Cache, halt_at: jax.Array | None
           ) -> tuple[recurrence.State, recurrence.Context, Cache]:
  """A token per row at iteration 0 of its position (positions >= L: rows that start none)."""
  h0, cache = _prelude(cfg, params, tokens_B[:, None], position_B[:, None], cache)
  s = _init_state(cfg, params, h0, jnp.ones(h0.shape[:2], bool))
  return s._replace(t=jnp.zeros_like(position_B)), _context(cfg, params, h0, halt_at), cache


def _iterate_rows(cfg: ml_collections.ConfigDict, params: model.Params, rows: Rows
                  ) -> tuple[recurrence.State, Cache]:
  """`iterate` on every row's token at that row's own iteration (rows.s.t [B])."""
  def one(s, ctx, position, k, v):
    lift = lambda x: x[None]   # the row as a batch of one
    s1 = jax.tree.map(lift, s._replace(t=None))._replace(t=s.t)
    ctx1 = recurrence.Context(*jax.tree.map(lift, ctx[:2]), ctx.halt_at)
    cache1 = Cache(k[:, None], v[:, None], *rows.cache[2:])
    s1, cache1 = iterate(cfg, params, ctx1, position[None, None], s1, cache1)
    drop = lambda x: x[0]
    return (jax.tree.map(drop, s1._replace(t=None))._replace(t=s1.t), cache1.k_KxBxLxHxDh[:, 0],
            cache1.v_KxBxLxHxDh[:, 0])
  ctx_axes = recurrence.Context(0, None if rows.ctx.inject_BxLxD is None else 0, None)
  s, k, v = jax.vmap(one, in_axes=(0, ctx_axes, 0, 1, 1), out_axes=(0, 1, 1))(
      rows.s, rows.ctx, rows.position_B, rows.cache.k_KxBxLxHxDh, rows.cache.v_KxBxLxHxDh)
  return s, rows.cache._replace(k_KxBxLxHxDh=k, v_KxBxLxHxDh=v)


def _decode_depthwise(cfg: ml_collections.ConfigDict, params: model.Params, lengths_B: jax.Array,
                      out: dict, cache: Cache, halt_at: jax.Array | None) -> tuple[dict, jax.Array]:
  """Positions 1..M-1, each row at its own position and iteration: (outputs, loop steps)."""
  B, M = out["tokens"].shape
  k_max, L = cfg.model.k_max, cache.k_KxBxLxHxDh.shape[2]

  def body(rows: Rows) -> Rows:
    running_B = rows.count_B < M
    s, cache = _iterate_rows(cfg, params, rows)
    halted_B = s.halted_BxL[:, 0] & running_B
    out = _record(rows.out, jnp.where(halted_B, rows.count_B, M),
                  output_logits(cfg, params, s.out_BxLxO)[:, 0], s.depth_BxL[:, 0])
    cache = fill_frozen(cfg, params, rows.ctx, s.h_BxLxD, rows.position_B[:, None],
                        jnp.where(halted_B, s.t, k_max), cache)
    count_B = rows.count_B + halted_B
    start_B = halted_B & (count_B < M)
    position_B = rows.position_B + start_B
    tokens_B = out["tokens"][jnp.arange(B), jnp.maximum(count_B - 1, 0)]
    fresh, ctx, cache = jax.lax.cond(
        jnp.any(start_B), lambda c: _start(cfg, params, tokens_B, jnp.where(start_B, position_B, L),
                                           c, halt_at),
        lambda c: (rows.s, rows.ctx, c), cache)
    pick = lambda mask_B: lambda new, old: jnp.where(
        mask_B.reshape(mask_B.shape + (1,) * (new.ndim - 1)), new, old)
    s = jax.tree.map(pick(running_B), s, rows.s)
    s = jax.tree.map(pick(start_B), fresh, s)
    ctx = recurrence.Context(*jax.tree.map(pick(start_B), ctx[:2], rows.ctx[:2]), halt_at)
    return Rows(s, ctx, cache, position_B, count_B, out, rows.steps + 1)

  first_B = jnp.where(M > 1, lengths_B, L)
  s, ctx, cache = _start(cfg, params, out["tokens"][:, 0], first_B, cache, halt_at)
  rows = Rows(s, ctx, cache, lengths_B, jnp.ones((B,), jnp.int32), out, jnp.zeros((), jnp.int32))
  rows = jax.lax.while_loop(lambda r: jnp.any(r.count_B < M), body, rows)
  return rows.out, rows.steps


def generate(cfg: ml_collections.ConfigDict, params: model.Params, prompts_BxP: jax.Array,
             lengths_B: jax.Array, max_new_tokens: int, schedule: str = "depthwise",
             halt_at: jax.Array | None = None) -> dict:
  """Greedy continuation of right-padded prompts (row b: prompts[b, :lengths[b]]) by
  max_new_tokens tokens: {"tokens" [B, M], "depth" [B, M] (block applications of the position
  that produced each token), "logits" [B, M, V], "prefill_iterations", "decode_steps" (loop steps
  after the prefill)}. `halt_at` = k: every token halts at iteration k."""
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
  B, P = prompts_BxP.shape
  M = max_new_tokens
  cache = init_cache(cfg.model, B, P + M - 1)
  positions_BxP = jnp.broadcast_to(jnp.arange(P), (B, P))
  logits, s, cache = run_tokens(cfg, params, prompts_BxP, positions_BxP,
                                positions_BxP < lengths_B[:, None], cache, halt_at)
  rows_B, last_B = jnp.arange(B), lengths_B - 1
  V = logits.shape[-1]
  out = {"tokens": jnp.zeros((B, M), jnp.int32), "depth": jnp.zeros((B, M), jnp.int32),
         "logits": jnp.zeros((B, M, V), logits.dtype)}
  out = _record(out, jnp.zeros((B,), jnp.int32), logits[rows_B, last_B], s.depth_BxL[rows_B, last_B])
  decode = _decode_lockstep if schedule == "lockstep" else _decode_depthwise
  out, steps = decode(cfg, params, lengths_B, out, cache, halt_at)
  return {**out, "prefill_iterations": s.t, "decode_steps": steps}
