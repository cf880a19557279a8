"""The recurrent step and its drivers.

`step` is one pure iteration: apply the block to every token, keep the new state only where the
token is still active (halted tokens stay frozen and remain visible as keys/values), then let
`halting` decide who halts. `run_scan` drives it for exactly K_max iterations (training, reverse-mode
differentiable); `run_while` stops as soon as every token has halted (inference). Iterations after
a token halts leave all of its entries bitwise unchanged, so both drivers return the same numbers.
`run_compact` is `run_while` with the block run only on the tokens that need it (`compaction.py`).

The block reads the state plus an optional offset that is not carried in it: the prelude output
(input injection, `model.input_injection`) and a learned vector per iteration
(`model.iteration_embedding`): h <- layer(h + c_t) - c_t.

The state and everything the halting rule computes are STATE_DTYPE (float32) whatever the compute
dtype `model.dtype`: the block casts the state to that dtype for its matmuls and adds its results
back to the float32 state (docs/design.md, "Compute dtype").
"""
from typing import Callable, NamedTuple, TypeVar

import chex
import jax
import jax.numpy as jnp
import ml_collections

from anira_jax import compaction, halting, model
from anira_jax.tasks.base import PAD

T = TypeVar("T")
# The dtype of the carried state h and the output mixture: float32 with any compute dtype, since
# a bfloat16 state would round every iteration's residual update and feed the rounding to the
# halting unit (docs/design.md, "Compute dtype").
STATE_DTYPE = jnp.float32


class State(NamedTuple):
  h_BxLxD: jax.Array        # current state; frozen once the token halts
  out_BxLxO: jax.Array      # sum_t w_t h_t (O = D), or sum_t w_t softmax(readout(h_t)) (O = V)
  survival_BxL: jax.Array   # S_t
  halted_BxL: jax.Array     # bool
  depth_BxL: jax.Array      # int32 block applications so far
  weights_BxLxK: jax.Array  # w_t per iteration
  probs_BxLxK: jax.Array    # lambda_t per iteration (0 where the token was already halted)
  logits_BxLxK: jax.Array   # halting logit / temperature per iteration (0 where already halted)
  t: jax.Array              # int32 iterations executed


class Context(NamedTuple):
  """What every iteration reads besides the state; fixed for the whole recurrence."""
  early_BxLxK: jax.Array          # early halting logits, decided from the prelude
  inject_BxLxD: jax.Array | None  # the prelude output, re-added at each iteration (or None)
  halt_at: jax.Array | None       # int32 k: every token halts at iteration k; None: the rule


def init_state(h0_BxLxD: jax.Array, valid_BxL: jax.Array, k_max: int, out_dim: int) -> State:
  """Padding tokens start halted with depth 0; every real token is active.

  Buffers are built from the inputs (`*_like`) so that under shard_map they vary over the data
  axis like the values the step writes into them."""
  zeros_like = lambda n: jnp.zeros_like(h0_BxLxD[..., :1], shape=h0_BxLxD.shape[:2] + (n,))
  zeros_BxLxK = zeros_like(k_max)
  return State(h_BxLxD=h0_BxLxD, out_BxLxO=zeros_like(out_dim),
               survival_BxL=jnp.ones_like(valid_BxL, jnp.float32), halted_BxL=~valid_BxL,
               depth_BxL=jnp.zeros_like(valid_BxL, jnp.int32),
               weights_BxLxK=zeros_BxLxK, probs_BxLxK=zeros_BxLxK, logits_BxLxK=zeros_BxLxK,
               t=jnp.zeros((), jnp.int32))


def iteration_logits(cfg: ml_collections.ConfigDict, params: model.Params, h_prev_BxLxD: jax.Array,
                     h_BxLxD: jax.Array, ctx: Context, t: jax.Array) -> jax.Array:
  """Every token's halting logit at iteration t, from where the variant decides
  (model.Variant.halting): the state after it, h (online: the halting unit, or the readout under
  halting.exit_rule="readout", +inf to halt and -inf not to), the prelude (early), or nowhere
  (fixed depth, -inf). h_prev is the state before the iteration."""
  source = model.variant(cfg.model).halting
  if source == "online" and cfg.halting.exit_rule == "readout":
    return jnp.where(readout_exit(cfg, params, h_prev_BxLxD, h_BxLxD, t), jnp.inf, -jnp.inf)
  if source == "online":
    return model.halt_logits(params, halting_input(cfg, h_BxLxD))[..., 0]
  if source == "early":
    return jax.lax.dynamic_index_in_dim(ctx.early_BxLxK, t, axis=-1, keepdims=False)
  return jnp.full(h_BxLxD.shape[:2], -jnp.inf)


def readout_exit(cfg: ml_collections.ConfigDict, params: model.Params, h_prev_BxLxD: jax.Array,
                 h_BxLxD: jax.Array, t: jax.Array) -> jax.Array:
  """halting.exit_rule="readout": whether the readout after iteration t is confident (top
  probability >= exit_confidence) or, for t >= 1, stable (KL from the readout after t - 1 below
  exit_stability). Not differentiated: the exits are trained by their cross-entropy."""
  log_softmax = lambda h: jax.nn.log_softmax(model.readout(cfg.model, params,
                                                            jax.lax.stop_gradient(h)))
  logp_BxLxV, logp_prev = log_softmax(h_BxLxD), log_softmax(h_prev_BxLxD)
  kl_BxL = jnp.sum(jnp.exp(logp_BxLxV) * (logp_BxLxV - logp_prev), axis=-1)
  confident = jnp.max(logp_BxLxV, axis=-1) >= jnp.log(cfg.halting.exit_confidence)
  return confident | ((t > 0) & (kl_BxL < cfg.halting.exit_stability))


def halting_input(cfg: ml_collections.ConfigDict, h_BxLxD: jax.Array) -> jax.Array:
  """What the halting unit reads: the state, cut from the gradient when the unit is trained as an
  exit classifier (halting.supervision="correctness"), so that its loss does not move the trunk."""
  return jax.lax.stop_gradient(h_BxLxD) if cfg.halting.supervision == "correctness" else h_BxLxD


def block_offset(params: model.Params, ctx: Context, t: jax.Array) -> jax.Array | None:
  """c_t, what the block reads besides the state at iteration t; None when there is nothing."""
  parts = [] if ctx.inject_BxLxD is None else [ctx.inject_BxLxD]
  if "iteration" in params:
    parts.append(jax.lax.dynamic_index_in_dim(params["iteration"], t, keepdims=False)[None, None])
  return sum(parts[1:], parts[0]) if parts else None


def advance(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context,
            s: State, h_new_BxLxD: jax.Array) -> State:
  """The state after iteration s.t, given the block's output for (at least) the active tokens."""
  active_BxL = ~s.halted_BxL
  h = jnp.where(active_BxL[..., None], h_new_BxLxD, s.h_BxLxD)
  logits = iteration_logits(cfg, params, s.h_BxLxD, h, ctx, s.t) / cfg.halting.temperature
  lam = halting.conditional_probs(logits, s.t, cfg.model.k_max)
  if cfg.halting.supervision == "correctness":   # the output weights do not train the unit
    lam = jax.lax.stop_gradient(lam)
  forced_now = None if ctx.halt_at is None else s.t + 1 >= ctx.halt_at
  u = halting.act(lam, s.survival_BxL, s.halted_BxL, cfg.halting.threshold, forced_now)
  contribution = (h if cfg.halting.output == "state"
                  else jax.nn.softmax(model.readout(cfg.model, params, h)))
  out = jnp.where(active_BxL[..., None], s.out_BxLxO + u.weight_BxL[..., None] * contribution,
                  s.out_BxLxO)
  at_t = lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, s.t, axis=-1)
  return State(h_BxLxD=h, out_BxLxO=out, survival_BxL=u.survival_BxL, halted_BxL=u.halted_BxL,
               depth_BxL=s.depth_BxL + active_BxL.astype(jnp.int32),
               weights_BxLxK=at_t(s.weights_BxLxK, u.weight_BxL),
               probs_BxLxK=at_t(s.probs_BxLxK, jnp.where(active_BxL, lam, 0.0)),
               logits_BxLxK=at_t(s.logits_BxLxK, jnp.where(active_BxL, logits, 0.0)), t=s.t + 1)


def with_offset(block: Callable[[jax.Array], tuple[jax.Array, T]], h_BxLxD: jax.Array,
                c: jax.Array | None) -> tuple[jax.Array, T]:
  """(h', aux) = block(h + c), with c taken off h' again so the state does not accumulate it."""
  if c is None:
    return block(h_BxLxD)
  h_new, aux = block(h_BxLxD + c)
  return h_new - c, aux


def offset_block(block: Callable[[jax.Array], tuple[jax.Array, T]], params: model.Params,
                 ctx: Context, s: State) -> tuple[jax.Array, T]:
  """`with_offset` at iteration s.t: the block reads h + c_t."""
  return with_offset(block, s.h_BxLxD, block_offset(params, ctx, s.t))


def step(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context, s: State) -> State:
  """One iteration of the shared block with masked halting."""
  h_new, _ = offset_block(lambda h: (model.block(cfg.model, params, h, s.t), None), params, ctx, s)
  return advance(cfg, params, ctx, s, h_new)


# What the backward pass keeps from each iteration instead of recomputing it (docs/design.md:
# "dots" halves the residual memory traffic that dominates the CPU train step).
REMAT = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
         "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def scan_states(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context,
                s: State) -> tuple[State, jax.Array]:
  """Exactly K_max iterations (differentiable): the final state and the state h_t after every
  iteration [K, B, L, D]; forward values do not depend on `model.remat`."""
  def body(s: State, _) -> tuple[State, jax.Array]:
    s = step(cfg, params, ctx, s)
    return s, s.h_BxLxD
  if REMAT[cfg.model.remat] is not None:
    body = jax.checkpoint(body, policy=REMAT[cfg.model.remat])
  return jax.lax.scan(body, s, None, length=cfg.model.k_max)


def run_scan(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context,
             s: State) -> State:
  """Exactly K_max iterations (training)."""
  return scan_states(cfg, params, ctx, s)[0]


def run_while(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context,
              s: State) -> State:
  """Iterates until every token has halted (at most K_max iterations)."""
  return jax.lax.while_loop(lambda s: ~jnp.all(s.halted_BxL),
                            lambda s: step(cfg, params, ctx, s), s)


def check_compactable(cfg: ml_collections.ConfigDict) -> None:
  """ValueError unless compaction fits: one shared block whose input does not change with t."""
  if model.variant(cfg.model).stacked or cfg.model.iteration_embedding:
    raise ValueError("compaction reuses keys and values across iterations of one shared "
                     "block; the transformer baseline has a layer per iteration, and "
                     "model.iteration_embedding changes the block input at each: use 'while' "
                     "(or generate without compact)")


def compact_loop(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context, s: State,
                 aux: T, record: Callable[[T, jax.Array, compaction.Cache], T]) -> tuple[State, T]:
  """run_while, with each iteration's block run only on the tokens that need it (compaction.py);
  equal to the other drivers up to float rounding. Before iteration t, `aux = record(aux, t,
  cache)` sees the projections of every token's state at t (decoding keeps them). Returns the
  final state and aux."""
  check_compactable(cfg)
  layer = params["core"]

  def body(carry: tuple[State, compaction.Cache, T]) -> tuple[State, compaction.Cache, T]:
    s, cache, aux = carry
    aux = record(aux, s.t, cache)
    h_new, cache = offset_block(
        lambda h: compaction.block(cfg.model, layer, h, ~s.halted_BxL, cache), params, ctx, s)
    return advance(cfg, params, ctx, s, h_new), cache, aux
  c = block_offset(params, ctx, s.t)   # the prelude output or nothing: the same every iteration
  cache = compaction.init_cache(cfg.model, layer, s.h_BxLxD if c is None else s.h_BxLxD + c)
  s, _, aux = jax.lax.while_loop(lambda c: ~jnp.all(c[0].halted_BxL), body, (s, cache, aux))
  return s, aux


def run_compact(cfg: ml_collections.ConfigDict, params: model.Params, ctx: Context,
                s: State) -> State:
  """`compact_loop` without recording."""
  return compact_loop(cfg, params, ctx, s, None, lambda aux, t, cache: aux)[0]


DRIVERS = {"scan": run_scan, "while": run_while, "compact": run_compact}
TINY = 1e-30  # floor of mixture probabilities before the log (keeps PAD rows finite)


def context(cfg: ml_collections.ConfigDict, params: model.Params, h0_BxLxD: jax.Array,
            halt_at: jax.Array | None) -> Context:
  """What the iterations of tokens with prelude output h0 read."""
  early = (model.halt_logits(params, halting_input(cfg, h0_BxLxD))
           if model.variant(cfg.model).halting == "early"
           else jnp.zeros(h0_BxLxD.shape[:2] + (cfg.model.k_max,)))
  return Context(early, h0_BxLxD if cfg.model.input_injection else None, halt_at)


def initial_state(cfg: ml_collections.ConfigDict, params: model.Params, h0_BxLxD: jax.Array,
                  valid_BxL: jax.Array) -> State:
  """`init_state` with the output size of the config's halting output."""
  out_dim = model.vocab_size(params) if cfg.halting.output == "distribution" else h0_BxLxD.shape[-1]
  return init_state(h0_BxLxD, valid_BxL, cfg.model.k_max, out_dim)


def begin(cfg: ml_collections.ConfigDict, params: model.Params, h0_BxLxD: jax.Array,
          valid_BxL: jax.Array, halt_at: jax.Array | None) -> tuple[Context, State]:
  """What every iteration reads, and the state before the first, from the prelude output h0
  (in the compute dtype; STATE_DTYPE from here on)."""
  h0_BxLxD = h0_BxLxD.astype(STATE_DTYPE)
  return context(cfg, params, h0_BxLxD, halt_at), initial_state(cfg, params, h0_BxLxD, valid_BxL)


def start(cfg: ml_collections.ConfigDict, params: model.Params, x_BxLxD: jax.Array,
          valid_BxL: jax.Array, halt_at: jax.Array | None) -> tuple[Context, State]:
  """The prelude on embedded tokens, then `begin`."""
  chex.assert_rank(x_BxLxD, 3)
  chex.assert_shape(valid_BxL, x_BxLxD.shape[:2])
  return begin(cfg, params, model.prelude(cfg.model, params, x_BxLxD), valid_BxL, halt_at)


def output_logits(cfg: ml_collections.ConfigDict, params: model.Params,
                  out_NxO: jax.Array) -> jax.Array:
  """Logits [..., V] of an output: the readout of a state mixture, or the log of a mixture of
  distributions."""
  if cfg.halting.output == "distribution":
    return jnp.log(jnp.maximum(out_NxO, TINY))
  return model.readout(cfg.model, params, out_NxO)


def forward_embedded(cfg: ml_collections.ConfigDict, params: model.Params, x_BxLxD: jax.Array,
                     valid_BxL: jax.Array, mode: str,
                     halt_at: jax.Array | None = None) -> tuple[jax.Array, State]:
  """Prelude, recurrence and readout on embedded tokens: (logits [B, L, V], final state).
  `halt_at` = k forces every token to halt at iteration k (1 <= k <= K_max)."""
  ctx, s0 = start(cfg, params, x_BxLxD, valid_BxL, halt_at)
  final = DRIVERS[mode](cfg, params, ctx, s0)
  return output_logits(cfg, params, final.out_BxLxO), final


def exit_outputs(cfg: ml_collections.ConfigDict, params: model.Params, final: State,
                 h_KxBxLxD: jax.Array) -> jax.Array:
  """Logits [K, B, L, V] of every exit: exit t is the output had the token halted at iteration t
  (its own weights w_s before t, the remainder 1 - sum_{s<t} w_s at t), the other tokens doing
  what they did. From t = depth - 1 on, every exit is the token's own output."""
  w_KxBxLx1 = jnp.moveaxis(final.weights_BxLxK, -1, 0)[..., None]
  c_KxBxLxO = (h_KxBxLxD if cfg.halting.output == "state"
               else jax.nn.softmax(model.readout(cfg.model, params, h_KxBxLxD)))
  before = lambda x: jnp.cumsum(x, axis=0) - x     # sum over s < t
  exits = before(w_KxBxLx1 * c_KxBxLxO) + (1.0 - before(w_KxBxLx1)) * c_KxBxLxO
  return output_logits(cfg, params, exits)


def forward_exits(cfg: ml_collections.ConfigDict, params: model.Params, tokens_BxL: jax.Array
                  ) -> tuple[jax.Array, jax.Array, State]:
  """The training forward pass (scan) with every exit: (logits [B, L, V], exit logits
  [K, B, L, V], final state)."""
  x_BxLxD = model.embed(cfg.model, params, tokens_BxL)
  ctx, s0 = start(cfg, params, x_BxLxD, tokens_BxL != PAD, None)
  final, h_KxBxLxD = scan_states(cfg, params, ctx, s0)
  return (output_logits(cfg, params, final.out_BxLxO), exit_outputs(cfg, params, final, h_KxBxLxD),
          final)


def forward(cfg: ml_collections.ConfigDict, params: model.Params, tokens_BxL: jax.Array,
            mode: str = "scan", halt_at: jax.Array | None = None) -> tuple[jax.Array, State]:
  """The whole model on token ids; mode "scan" (training), "while" or "compact" (inference);
  `halt_at` = k: every token halts at iteration k."""
  return forward_embedded(cfg, params, model.embed(cfg.model, params, tokens_BxL),
                          tokens_BxL != PAD, mode, halt_at)
