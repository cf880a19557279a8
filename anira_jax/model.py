"""Prelude, shared recurrent block and readout of ANIRA, as pure functions of a params dict.

Flax Linen modules define the layers; `init_params` builds one params tree and the functions
below apply its parts. `recurrence.py` iterates `block` and `halting.py` turns `halt_logits` into
decisions, so the model never knows how often its block runs.

params = {"embed", "prelude": [layer, ...], "core": layer | layers stacked on axis 0 (transformer),
          "halt": dense (anira_o: D -> 1, anira_e: D -> K_max), "readout": {"norm", "out"}}
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Params = Any
VARIANTS = ("anira_o", "anira_e", "fixed", "transformer")
ADAPTIVE = ("anira_o", "anira_e")   # per-token depth; the others always run k_max iterations


def rope(x_BxLxHxK: jax.Array, positions_L: jax.Array, base: float = 10_000.0) -> jax.Array:
  """Rotary position embedding: rotates feature pairs by position-dependent angles."""
  half = x_BxLxHxK.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_LxK = positions_L[:, None].astype(jnp.float32) * freqs[None, :]
  sin, cos = jnp.sin(angles_LxK)[None, :, None], jnp.cos(angles_LxK)[None, :, None]
  x1, x2 = x_BxLxHxK[..., :half], x_BxLxHxK[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Layer(nn.Module):
  """Pre-LN causal Transformer layer."""
  d_model: int
  num_heads: int
  mlp_ratio: int
  positions: str  # "rope" | "none"

  @nn.compact
  def __call__(self, h_BxLxD: jax.Array) -> jax.Array:
    B, L, D = h_BxLxD.shape
    H, K = self.num_heads, D // self.num_heads
    x = nn.LayerNorm(name="attn_norm")(h_BxLxD)
    qkv = nn.DenseGeneral((3, H, K), name="qkv")(x)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.positions == "rope":
      positions_L = jnp.arange(L)
      q_BxLxHxK, k_BxLxHxK = rope(q_BxLxHxK, positions_L), rope(k_BxLxHxK, positions_L)
    o_BxLxHxK = jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True)
    h_BxLxD = h_BxLxD + nn.DenseGeneral(D, axis=(-2, -1), name="attn_out")(o_BxLxHxK)
    x = nn.LayerNorm(name="mlp_norm")(h_BxLxD)
    x = nn.Dense(self.mlp_ratio * D, name="mlp_in")(x)
    x = nn.Dense(D, name="mlp_out")(nn.gelu(x))
    return h_BxLxD + x


def _layer(cfg: ml_collections.ConfigDict) -> Layer:
  return Layer(cfg.d_model, cfg.num_heads, cfg.mlp_ratio, cfg.positions)


def _halt_outputs(cfg: ml_collections.ConfigDict) -> int:
  return cfg.k_max if cfg.variant == "anira_e" else 1


def init_params(cfg: ml_collections.ConfigDict, vocab_size: int, rng: jax.Array,
                halt_bias: float) -> Params:
  """Random parameters for the model config `cfg` (config.model)."""
  k_embed, k_prelude, k_core, k_halt, k_norm, k_out = jax.random.split(rng, 6)
  h_1x1xD = jnp.zeros((1, 1, cfg.d_model))
  init_layer = lambda k: _layer(cfg).init(k, h_1x1xD)["params"]
  core_keys = jax.random.split(k_core, cfg.k_max if cfg.variant == "transformer" else 1)
  core = jax.vmap(init_layer)(core_keys)
  if cfg.variant != "transformer":
    core = jax.tree.map(lambda p: p[0], core)
  halt = nn.Dense(_halt_outputs(cfg), bias_init=nn.initializers.constant(halt_bias))
  return {
      "embed": nn.Embed(vocab_size, cfg.d_model).init(k_embed, jnp.zeros((1, 1), jnp.int32))["params"],
      "prelude": [init_layer(k) for k in jax.random.split(k_prelude, cfg.prelude_layers)],
      "core": core,
      "halt": halt.init(k_halt, h_1x1xD)["params"],
      "readout": {"norm": nn.LayerNorm().init(k_norm, h_1x1xD)["params"],
                  "out": nn.Dense(vocab_size).init(k_out, h_1x1xD)["params"]},
  }


def embed(params: Params, tokens_BxL: jax.Array) -> jax.Array:
  vocab, d_model = params["embed"]["embedding"].shape
  return nn.Embed(vocab, d_model).apply({"params": params["embed"]}, tokens_BxL)


def prelude(cfg: ml_collections.ConfigDict, params: Params, x_BxLxD: jax.Array) -> jax.Array:
  for layer_params in params["prelude"]:
    x_BxLxD = _layer(cfg).apply({"params": layer_params}, x_BxLxD)
  return x_BxLxD


def block(cfg: ml_collections.ConfigDict, params: Params, h_BxLxD: jax.Array,
          t: jax.Array) -> jax.Array:
  """Iteration t (0-based) of the core: the shared layer, or layer t of a standard stack."""
  core = params["core"]
  if cfg.variant == "transformer":
    core = jax.tree.map(lambda p: jnp.asarray(p)[t], core)  # p may be a host (NumPy) array
  return _layer(cfg).apply({"params": core}, h_BxLxD)


def halt_logits(params: Params, h_BxLxD: jax.Array) -> jax.Array:
  """Halting logits: [B, L, 1] from a state (anira_o) or [B, L, K_max] from the prelude (anira_e)."""
  features = params["halt"]["kernel"].shape[-1]
  return nn.Dense(features).apply({"params": params["halt"]}, h_BxLxD)


def vocab_size(params: Params) -> int:
  return params["readout"]["out"]["kernel"].shape[-1]


def readout(params: Params, h_BxLxD: jax.Array) -> jax.Array:
  x = nn.LayerNorm().apply({"params": params["readout"]["norm"]}, h_BxLxD)
  return nn.Dense(vocab_size(params)).apply({"params": params["readout"]["out"]}, x)
