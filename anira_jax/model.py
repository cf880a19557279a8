"""Prelude, shared recurrent block and readout of ANIRA, as pure functions of a params dict.

Flax Linen modules define the layers; `init_params` builds one params tree and the functions
below apply its parts. `recurrence.py` iterates `block` and `halting.py` turns `halt_logits` into
decisions, so the model never knows how often its block runs; `compaction.py` runs the layer's
parts (`project`, `attend`, `update`) on the tokens still active.

Each variant is described once, by a `Variant` in `VARIANTS`; the recurrence, the loss and
training read that description (`variant(cfg)`), never the variant's name.

params = {"embed", "prelude": [layer, ...], "core": layer | layers stacked on axis 0 (stacked core),
          "halt": dense (early halting: D -> K_max, otherwise D -> 1), with "norm" when its input
                  is normalised (halting.input_norm),
          "iteration": [K_max, D] (model.iteration_embedding only), "readout": {"norm", "out"}}

Compute dtype (`model.dtype`): the embedding, the layers' norms, matmuls and activations and the
readout matmul run in it, their float32 parameters cast at use (flax's `dtype` beside
`param_dtype`); the halting unit and the readout's logits are float32 whatever it is, and so is
the recurrent state (recurrence.STATE_DTYPE; docs/design.md, "Compute dtype").
"""
import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Params = Any


@dataclasses.dataclass(frozen=True)
class Variant:
  """What a variant is, read in place of its name (`variant(cfg)`)."""
  # Where the halting logits come from: "online", the state after each iteration through a D -> 1
  # head; "early", the prelude output, all K_max at once through a D -> K_max head; None, nowhere
  # (fixed depth: every token runs k_max iterations).
  halting: Literal["online", "early"] | None
  stacked: bool  # the core is k_max distinct layers, layer t at iteration t; else one shared layer

  @property
  def adaptive(self) -> bool:
    """Per-token depth, and with it the compute penalty."""
    return self.halting is not None


VARIANTS = {"anira_o": Variant(halting="online", stacked=False),
            "anira_e": Variant(halting="early", stacked=False),
            "fixed": Variant(halting=None, stacked=False),
            "transformer": Variant(halting=None, stacked=True)}


def variant(cfg: ml_collections.ConfigDict) -> Variant:
  """The description of the model config's variant."""
  return VARIANTS[cfg.variant]


def rope(x_NxHxK: jax.Array, positions_N: jax.Array, base: float = 10_000.0) -> jax.Array:
  """Rotary position embedding: rotates feature pairs by position-dependent angles.

  N stands for any leading axes (B x L, or a flat buffer of tokens); `positions` has exactly
  those axes, or size 1 in some of them."""
  half = x_NxHxK.shape[-1] // 2
  freqs_K = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_NxK = (positions_N.astype(jnp.float32)[..., None]
                * jnp.expand_dims(freqs_K, tuple(range(positions_N.ndim))))
  sin, cos = jnp.sin(angles_NxK)[..., None, :], jnp.cos(angles_NxK)[..., None, :]
  x1, x2 = x_NxHxK[..., :half], x_NxHxK[..., half:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_NxHxK.dtype)   # angles in float32, the result in the input's dtype


def attend(q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array,
           positions_BxT: jax.Array) -> jax.Array:
  """Causal attention: the query at position p sees the keys at positions 0..p (of S)."""
  S = k_BxSxHxK.shape[1]
  mask_Bx1xTxS = jnp.arange(S)[None, None, None, :] <= positions_BxT[:, None, :, None]
  return jax.nn.dot_product_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask_Bx1xTxS)


class Layer(nn.Module):
  """Pre-LN causal Transformer layer, in two halves around `attend` so that a caller can run them
  on different sets of tokens (compaction.py): `project` (norm, q/k/v, rotary) and `update`
  (attention output projection, MLP, both residual). Tokens are on any leading axes N. Norms,
  matmuls and activations run in `dtype`; a residual sum keeps the input's dtype when it is the
  wider (a float32 state stays float32)."""
  d_model: int
  num_heads: int
  mlp_ratio: int
  positions: str  # "rope" | "none"
  dtype: Any      # compute dtype (model.dtype)

  def setup(self):
    H, D, dtype = self.num_heads, self.d_model, self.dtype
    self.attn_norm = nn.LayerNorm(dtype=dtype)
    self.qkv = nn.DenseGeneral((3, H, D // H), dtype=dtype)
    self.attn_out = nn.DenseGeneral(D, axis=(-2, -1), dtype=dtype)
    self.mlp_norm = nn.LayerNorm(dtype=dtype)
    self.mlp_in = nn.Dense(self.mlp_ratio * D, dtype=dtype)
    self.mlp_out = nn.Dense(D, dtype=dtype)

  def project(self, h_NxD: jax.Array,
              positions_N: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    qkv_Nx3xHxK = self.qkv(self.attn_norm(h_NxD))
    q_NxHxK, k_NxHxK, v_NxHxK = (qkv_Nx3xHxK[..., i, :, :] for i in range(3))
    if self.positions == "rope":
      q_NxHxK, k_NxHxK = rope(q_NxHxK, positions_N), rope(k_NxHxK, positions_N)
    return q_NxHxK, k_NxHxK, v_NxHxK

  def finish(self, h_NxD: jax.Array, o_NxHxK: jax.Array) -> jax.Array:
    h_NxD = h_NxD + self.attn_out(o_NxHxK)
    x = self.mlp_out(nn.gelu(self.mlp_in(self.mlp_norm(h_NxD))))
    return h_NxD + x

  def __call__(self, h_BxLxD: jax.Array) -> jax.Array:
    positions_1xL = jnp.arange(h_BxLxD.shape[1])[None]
    q, k, v = self.project(h_BxLxD, positions_1xL)
    positions_BxL = jnp.broadcast_to(positions_1xL, h_BxLxD.shape[:2])
    return self.finish(h_BxLxD, attend(q, k, v, positions_BxL))


def compute_dtype(cfg: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype of activations and matmuls of the model config `cfg` (model.dtype)."""
  return jnp.dtype(cfg.dtype)


def _layer(cfg: ml_collections.ConfigDict, dtype: Any = None) -> Layer:
  """The layer of the model config, computing in `dtype` (default: model.dtype)."""
  return Layer(cfg.d_model, cfg.num_heads, cfg.mlp_ratio, cfg.positions,
               dtype or compute_dtype(cfg))


def _halt_outputs(cfg: ml_collections.ConfigDict) -> int:
  return cfg.k_max if variant(cfg).halting == "early" else 1


def init_params(cfg: ml_collections.ConfigDict, vocab_size: int, rng: jax.Array,
                halt_bias: float, halt_norm: bool = False) -> Params:
  """Random parameters for the model config `cfg` (config.model); `halt_norm` gives the halting
  unit a LayerNorm on its input."""
  k_embed, k_prelude, k_core, k_halt, k_norm, k_out = jax.random.split(rng, 6)
  h_1x1xD = jnp.zeros((1, 1, cfg.d_model))
  # float32 parameters whatever model.dtype, initialised as such: the same for both dtypes.
  init_layer = lambda k: _layer(cfg, jnp.float32).init(k, h_1x1xD)["params"]
  stacked = variant(cfg).stacked
  core = jax.vmap(init_layer)(jax.random.split(k_core, cfg.k_max if stacked else 1))
  if not stacked:
    core = jax.tree.map(lambda p: p[0], core)
  halt = nn.Dense(_halt_outputs(cfg), bias_init=nn.initializers.constant(halt_bias))
  params = {
      "embed": nn.Embed(vocab_size, cfg.d_model).init(k_embed, jnp.zeros((1, 1), jnp.int32))["params"],
      "prelude": [init_layer(k) for k in jax.random.split(k_prelude, cfg.prelude_layers)],
      "core": core,
      "halt": halt.init(k_halt, h_1x1xD)["params"],
      "readout": {"norm": nn.LayerNorm().init(k_norm, h_1x1xD)["params"],
                  "out": nn.Dense(vocab_size).init(k_out, h_1x1xD)["params"]},
  }
  if halt_norm:
    params["halt"]["norm"] = nn.LayerNorm().init(k_halt, h_1x1xD)["params"]
  if cfg.iteration_embedding:   # zeros: the block starts as without it
    params["iteration"] = jnp.zeros((cfg.k_max, cfg.d_model))
  return params


def embed(cfg: ml_collections.ConfigDict, params: Params, tokens_BxL: jax.Array) -> jax.Array:
  """Token embeddings [B, L, D] in the compute dtype."""
  vocab, d_model = params["embed"]["embedding"].shape
  return nn.Embed(vocab, d_model, dtype=compute_dtype(cfg)).apply({"params": params["embed"]},
                                                                    tokens_BxL)


def prelude(cfg: ml_collections.ConfigDict, params: Params, x_BxLxD: jax.Array) -> jax.Array:
  for layer_params in params["prelude"]:
    x_BxLxD = _layer(cfg).apply({"params": layer_params}, x_BxLxD)
  return x_BxLxD


def block(cfg: ml_collections.ConfigDict, params: Params, h_BxLxD: jax.Array,
          t: jax.Array) -> jax.Array:
  """Iteration t (0-based) of the core: the shared layer, or layer t of a standard stack."""
  core = params["core"]
  if variant(cfg).stacked:
    core = jax.tree.map(lambda p: jnp.asarray(p)[t], core)  # p may be a host (NumPy) array
  return _layer(cfg).apply({"params": core}, h_BxLxD)


def project(cfg: ml_collections.ConfigDict, layer: Params, h_NxD: jax.Array,
            positions_N: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Layer.project: queries, keys and values [N, H, K] of tokens at `positions`."""
  return _layer(cfg).apply({"params": layer}, h_NxD, positions_N, method=Layer.project)


def finish(cfg: ml_collections.ConfigDict, layer: Params, h_NxD: jax.Array,
           o_NxHxK: jax.Array) -> jax.Array:
  """Layer.finish: the layer's output from a token's state and its attention result."""
  return _layer(cfg).apply({"params": layer}, h_NxD, o_NxHxK, method=Layer.finish)


def halt_logits(params: Params, h_BxLxD: jax.Array) -> jax.Array:
  """Halting logits: [B, L, 1] from a state (online) or [B, L, K_max] from the prelude (early),
  through a LayerNorm first when the unit has one; float32 whatever model.dtype."""
  unit = params["halt"]
  if "norm" in unit:
    h_BxLxD = nn.LayerNorm(dtype=jnp.float32).apply({"params": unit["norm"]}, h_BxLxD)
  dense = {"kernel": unit["kernel"], "bias": unit["bias"]}
  return nn.Dense(dense["kernel"].shape[-1], dtype=jnp.float32).apply({"params": dense}, h_BxLxD)


def vocab_size(params: Params) -> int:
  return params["readout"]["out"]["kernel"].shape[-1]


def readout(cfg: ml_collections.ConfigDict, params: Params, h_BxLxD: jax.Array) -> jax.Array:
  """Logits [B, L, V]: norm and matmul in the compute dtype, the logits float32 (so is every
  softmax of them, and every loss)."""
  dtype = compute_dtype(cfg)
  x = nn.LayerNorm(dtype=dtype).apply({"params": params["readout"]["norm"]}, h_BxLxD)
  logits = nn.Dense(vocab_size(params), dtype=dtype).apply({"params": params["readout"]["out"]}, x)
  return logits.astype(jnp.float32)
