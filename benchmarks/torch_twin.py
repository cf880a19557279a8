"""A PyTorch-eager twin of anira_jax's model, written the way a PyTorch researcher would.

Same architecture (pre-LN causal layers with RoPE, tanh-approximate GELU as flax's `nn.gelu`,
LayerNorm eps 1e-6 as flax's default), same halting math in the same order of operations
(float32 throughout), same loss and the same optimizer (gradient clipping by global norm, then
AdamW with the warm-up + cosine schedule, weight decay on matrices only). It loads the JAX
parameters (`load_jax_params`), so `check_parity` can prove on a batch that both frameworks give
the same logits and exactly the same per-token depths. Only benchmarks and tests import this
module; the anira_jax package never imports torch (`pip install -e ".[bench]"`).

Supports every variant (anira_o, anira_e, fixed, transformer), both halting outputs ("state",
"distribution") and the penalties in PENALTIES; a config asking for anything outside SUPPORTED
(a penalty registered in anira_jax.halting but not here, say) is refused.
"""
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

PAD = 0          # anira_jax.tasks.base.PAD
TINY = 1e-30     # anira_jax.recurrence.TINY
LN_EPS = 1e-6    # flax nn.LayerNorm default
LOGIT_TOL = 1e-4  # max |logit difference| for the twin to count as faithful


def rope_tables(max_len: int, head_dim: int, base: float = 10_000.0):
  """cos, sin [max_len, head_dim / 2] for the half-split rotation, as anira_jax.model.rope."""
  half = head_dim // 2
  freqs = base ** (-torch.arange(half, dtype=torch.float32) / half)
  angles = torch.arange(max_len, dtype=torch.float32)[:, None] * freqs[None, :]
  return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
  """x [B, H, L, K]; cos, sin [L, K / 2]."""
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Layer(nn.Module):
  """Pre-LN causal Transformer layer."""

  def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, rope: bool):
    super().__init__()
    self.num_heads, self.rope = num_heads, rope
    self.attn_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.qkv = nn.Linear(d_model, 3 * d_model)
    self.attn_out = nn.Linear(d_model, d_model)
    self.mlp_norm = nn.LayerNorm(d_model, eps=LN_EPS)
    self.mlp_in = nn.Linear(d_model, mlp_ratio * d_model)
    self.mlp_out = nn.Linear(mlp_ratio * d_model, d_model)

  def forward(self, h, cos, sin):
    B, L, D = h.shape
    H = self.num_heads
    qkv = self.qkv(self.attn_norm(h)).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                       # [B, H, L, K]
    if self.rope:
      q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    h = h + self.attn_out(o.transpose(1, 2).reshape(B, L, D))
    x = self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(h)), approximate="tanh"))
    return h + x


def ponder(weights, depth):
  """ACT's N + R, as anira_jax.halting.ponder_cost."""
  index = (depth.long() - 1).clamp_min(0)[..., None]
  return depth + weights.gather(-1, index)[..., 0]


def kl_to_prior(weights, prior):
  """KL(w || prior) per token, in weight space."""
  return torch.sum(torch.xlogy(weights, weights) - weights * torch.log(prior), dim=-1)


def geometric_prior(k_max: int, prior_lambda: float):
  """geometric(prior_lambda) over depths 1..K, truncated and renormalised."""
  prior = prior_lambda * (1.0 - prior_lambda) ** torch.arange(k_max, dtype=torch.float32)
  return prior / prior.sum()


# Per-token compute penalty (weights, depth, the config's halting fields) of each halting.penalty
# the twin implements, as the rule of that name in anira_jax.halting.PENALTIES.
PENALTIES = {
    "ponder": lambda weights, depth, h: ponder(weights, depth),
    "kl_geometric": lambda weights, depth, h: kl_to_prior(
        weights, geometric_prior(weights.shape[-1], h.prior_lambda)),
    "kl_uniform": lambda weights, depth, h: kl_to_prior(
        weights, torch.full((weights.shape[-1],), 1.0 / weights.shape[-1])),
}
# Config values the twin implements; any other value of these fields is refused.
SUPPORTED = {"halting.penalty": tuple(PENALTIES),
             "halting.penalty_tokens": ("all",), "halting.input_norm": (False,),
             "model.input_injection": (False,), "model.iteration_embedding": (False,)}


def check_supported(cfg) -> list[str]:
  """The `field=value` settings of cfg that the twin does not implement."""
  bad = []
  for field, values in SUPPORTED.items():
    section, key = field.split(".")
    if cfg[section][key] not in values:
      bad.append(f"{field}={cfg[section][key]!r}")
  return bad


class AniraTwin(nn.Module):
  """Embedding, prelude, the recurrent core with per-token halting, readout."""

  def __init__(self, cfg, vocab_size: int):
    super().__init__()
    unsupported = check_supported(cfg)
    if unsupported:
      raise NotImplementedError(f"the PyTorch twin does not implement {', '.join(unsupported)}")
    m, h = cfg.model, cfg.halting
    self.variant, self.k_max = m.variant, m.k_max
    self.output, self.threshold, self.temperature = h.output, h.threshold, h.temperature
    layer = lambda: Layer(m.d_model, m.num_heads, m.mlp_ratio, m.positions == "rope")
    self.embed = nn.Embedding(vocab_size, m.d_model)
    self.prelude = nn.ModuleList([layer() for _ in range(m.prelude_layers)])
    self.core = nn.ModuleList([layer() for _ in range(m.k_max if m.variant == "transformer"
                                                      else 1)])
    self.halt = nn.Linear(m.d_model, m.k_max if m.variant == "anira_e" else 1)
    self.readout_norm = nn.LayerNorm(m.d_model, eps=LN_EPS)
    self.readout = nn.Linear(m.d_model, vocab_size)
    cos, sin = rope_tables(m.max_len, m.d_model // m.num_heads)
    self.register_buffer("rope_cos", cos, persistent=False)
    self.register_buffer("rope_sin", sin, persistent=False)

  def read(self, h):
    return self.readout(self.readout_norm(h))

  def forward(self, tokens, early_exit: bool = True):
    """tokens [B, L] -> logits [B, L, V], {"depth" [B, L], "weights"/"probs" [B, L, K_max],
    "iterations"}. With early_exit the loop stops once every token has halted (the while_loop
    of anira_jax); iterations after that would change nothing, so the numbers are the same."""
    B, L = tokens.shape
    cos, sin = self.rope_cos[:L], self.rope_sin[:L]
    h = self.embed(tokens)
    for layer in self.prelude:
      h = layer(h, cos, sin)
    early = self.halt(h) if self.variant == "anira_e" else None
    halted = tokens == PAD                                # padding starts halted, depth 0
    survival = torch.ones(B, L)
    out = torch.zeros(B, L, self.readout.out_features if self.output == "distribution"
                      else h.shape[-1])
    depth = torch.zeros(B, L, dtype=torch.int32)
    weights, probs = [], []
    for t in range(self.k_max):
      if early_exit and bool(halted.all()):
        break
      active = ~halted
      core = self.core[t if self.variant == "transformer" else 0]
      h = torch.where(active[..., None], core(h, cos, sin), h)
      if t == self.k_max - 1:
        lam = torch.ones(B, L)                            # everyone halts by K_max
      elif self.variant == "anira_o":
        lam = torch.sigmoid(self.halt(h)[..., 0] / self.temperature)
      elif self.variant == "anira_e":
        lam = torch.sigmoid(early[..., t] / self.temperature)
      else:
        lam = torch.zeros(B, L)
      new_survival = survival * (1.0 - lam)
      halt_now = active & (new_survival <= self.threshold)
      w = torch.where(active, torch.where(halt_now, survival, lam * survival), 0.0)
      survival = torch.where(active, new_survival, survival)
      halted = halted | halt_now
      contribution = h if self.output == "state" else torch.softmax(self.read(h), dim=-1)
      out = torch.where(active[..., None], out + w[..., None] * contribution, out)
      depth = depth + active.int()
      weights.append(w)
      probs.append(torch.where(active, lam, 0.0))
    pad = self.k_max - len(weights)
    weights = F.pad(torch.stack(weights, -1), (0, pad))
    probs = F.pad(torch.stack(probs, -1), (0, pad))
    logits = (torch.log(out.clamp_min(TINY)) if self.output == "distribution"
              else self.read(out))
    return logits, {"depth": depth, "weights": weights, "probs": probs,
                    "iterations": self.k_max - pad}


def objective(cfg, model: AniraTwin, batch: dict, step: int):
  """Cross-entropy on answer tokens + penalty_scale * penalty over non-PAD tokens.

  The forward exits early here too (a PyTorch loop would): iterations after every token has
  halted change no value and no gradient, while anira_jax's scan always runs K_max of them."""
  logits, aux = model(batch["inputs"])
  answer = batch["loss_mask"].float()
  valid = (batch["inputs"] != PAD).float()
  ce_tok = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(),
                           reduction="none").view_as(answer)
  ce = (ce_tok * answer).sum() / answer.sum()
  h = cfg.halting
  if cfg.model.variant in ("anira_o", "anira_e"):
    pen = (PENALTIES[h.penalty](aux["weights"], aux["depth"], h) * valid).sum()
    pen = pen / valid.sum()
  else:
    pen = torch.zeros(())
  scale = h.penalty_weight * min(max((step - h.penalty_warmup + 1) / max(h.penalty_ramp, 1),
                                     0.0), 1.0)
  loss = ce + scale * pen
  return loss, {"loss": loss.detach(), "ce": ce.detach(), "penalty": pen.detach(),
                "depth": aux["depth"]}


def lr_factor(t, count: int) -> float:
  """optax.warmup_cosine_decay_schedule(0, lr, warmup, max(steps, warmup + 1), 0.1 lr) / lr."""
  warmup, decay = t.warmup_steps, max(t.steps, t.warmup_steps + 1) - t.warmup_steps
  if count < warmup:
    return count / warmup
  cosine = 0.5 * (1 + math.cos(math.pi * min(count - warmup, decay) / decay))
  return 0.9 * cosine + 0.1


class Trainer:
  """The train step: loss, backward, clip_grad_norm_, AdamW, scheduler. `step` is where the
  schedule and the penalty warm-up start (the AdamW moments always start at zero)."""

  def __init__(self, cfg, model: AniraTwin, step: int = 0):
    t = cfg.train
    self.cfg, self.model, self.step = cfg, model, step
    # Weight decay on matrices only (anira_jax.optimizer.decay_mask: kernels and embeddings).
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    self.opt = torch.optim.AdamW([{"params": decayed, "weight_decay": t.weight_decay},
                                  {"params": others, "weight_decay": 0.0}],
                                 lr=t.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda c: lr_factor(t, c + step))

  def train_step(self, batch: dict) -> dict:
    self.model.train()
    self.opt.zero_grad(set_to_none=True)
    loss, metrics = objective(self.cfg, self.model, batch, self.step)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
    self.opt.step()
    self.sched.step()
    self.step += 1
    return metrics


def to_torch_batch(batch: dict) -> dict:
  """inputs/targets int64, loss_mask bool, from the NumPy batch of anira_jax.data."""
  return {"inputs": torch.from_numpy(np.asarray(batch["inputs"], np.int64)),
          "targets": torch.from_numpy(np.asarray(batch["targets"], np.int64)),
          "loss_mask": torch.from_numpy(np.asarray(batch["loss_mask"], bool))}


# --- parameters: JAX pytree <-> torch -------------------------------------------------------

def _layer_state(p: dict, prefix: str) -> dict:
  """A flax Layer's params as the twin Layer's state dict (DenseGeneral kernels reshaped)."""
  a = lambda x: torch.from_numpy(np.array(x, np.float32))
  D = p["qkv"]["kernel"].shape[0]
  return {
      f"{prefix}attn_norm.weight": a(p["attn_norm"]["scale"]),
      f"{prefix}attn_norm.bias": a(p["attn_norm"]["bias"]),
      f"{prefix}qkv.weight": a(np.reshape(p["qkv"]["kernel"], (D, -1)).T),   # (D,3,H,K)
      f"{prefix}qkv.bias": a(np.reshape(p["qkv"]["bias"], (-1,))),
      f"{prefix}attn_out.weight": a(np.reshape(p["attn_out"]["kernel"], (-1, D)).T),  # (H,K,D)
      f"{prefix}attn_out.bias": a(p["attn_out"]["bias"]),
      f"{prefix}mlp_norm.weight": a(p["mlp_norm"]["scale"]),
      f"{prefix}mlp_norm.bias": a(p["mlp_norm"]["bias"]),
      f"{prefix}mlp_in.weight": a(np.asarray(p["mlp_in"]["kernel"]).T),
      f"{prefix}mlp_in.bias": a(p["mlp_in"]["bias"]),
      f"{prefix}mlp_out.weight": a(np.asarray(p["mlp_out"]["kernel"]).T),
      f"{prefix}mlp_out.bias": a(p["mlp_out"]["bias"]),
  }


def state_dict_from_jax(params, variant: str) -> dict:
  """The twin's state dict from an anira_jax params pytree (jax or NumPy arrays)."""
  params = _numpy(params)
  a = lambda x: torch.from_numpy(np.array(x, np.float32))
  sd = {"embed.weight": a(params["embed"]["embedding"]),
        "halt.weight": a(params["halt"]["kernel"].T), "halt.bias": a(params["halt"]["bias"]),
        "readout_norm.weight": a(params["readout"]["norm"]["scale"]),
        "readout_norm.bias": a(params["readout"]["norm"]["bias"]),
        "readout.weight": a(params["readout"]["out"]["kernel"].T),
        "readout.bias": a(params["readout"]["out"]["bias"])}
  for i, layer in enumerate(params["prelude"]):
    sd.update(_layer_state(layer, f"prelude.{i}."))
  core = params["core"]
  if variant == "transformer":
    n = core["qkv"]["kernel"].shape[0]
    for i in range(n):
      sd.update(_layer_state(_tree_map(lambda x: x[i], core), f"core.{i}."))
  else:
    sd.update(_layer_state(core, "core.0."))
  return sd


def load_jax_params(model: AniraTwin, params) -> AniraTwin:
  model.load_state_dict(state_dict_from_jax(params, model.variant), strict=True)
  return model


def from_jax(cfg, params, vocab_size: int | None = None) -> AniraTwin:
  """A twin of `cfg` (the anira_jax config) holding `params`."""
  vocab = vocab_size or np.shape(params["readout"]["out"]["kernel"])[-1]
  return load_jax_params(AniraTwin(cfg, vocab), params)


def _layer_params(sd: dict, prefix: str, num_heads: int) -> dict:
  n = lambda k: sd[prefix + k].detach().numpy().copy()
  D = n("qkv.weight").shape[1]
  H, K = num_heads, D // num_heads
  return {"attn_norm": {"scale": n("attn_norm.weight"), "bias": n("attn_norm.bias")},
          "qkv": {"kernel": n("qkv.weight").T.reshape(D, 3, H, K),
                  "bias": n("qkv.bias").reshape(3, H, K)},
          "attn_out": {"kernel": n("attn_out.weight").T.reshape(H, K, D),
                       "bias": n("attn_out.bias")},
          "mlp_norm": {"scale": n("mlp_norm.weight"), "bias": n("mlp_norm.bias")},
          "mlp_in": {"kernel": n("mlp_in.weight").T, "bias": n("mlp_in.bias")},
          "mlp_out": {"kernel": n("mlp_out.weight").T, "bias": n("mlp_out.bias")}}


def to_jax_params(model: AniraTwin) -> dict:
  """The twin's parameters as an anira_jax params pytree of NumPy arrays (the inverse map)."""
  sd = model.state_dict()
  H = model.core[0].num_heads
  n = lambda k: sd[k].detach().numpy().copy()
  layers = [_layer_params(sd, f"core.{i}.", H) for i in range(len(model.core))]
  core = (_tree_map(lambda *xs: np.stack(xs), *layers) if model.variant == "transformer"
          else layers[0])
  return {"embed": {"embedding": n("embed.weight")},
          "prelude": [_layer_params(sd, f"prelude.{i}.", H) for i in range(len(model.prelude))],
          "core": core,
          "halt": {"kernel": n("halt.weight").T, "bias": n("halt.bias")},
          "readout": {"norm": {"scale": n("readout_norm.weight"), "bias": n("readout_norm.bias")},
                      "out": {"kernel": n("readout.weight").T, "bias": n("readout.bias")}}}


def _tree_map(fn, *trees):
  first = trees[0]
  if isinstance(first, dict):
    return {k: _tree_map(fn, *(t[k] for t in trees)) for k in first}
  if isinstance(first, (list, tuple)):
    return type(first)(_tree_map(fn, *xs) for xs in zip(*trees))
  return fn(*trees)


def _numpy(tree):
  return _tree_map(lambda x: np.asarray(x), _plain(tree))


def _plain(tree):
  """FrozenDict / Mapping -> dict, recursively."""
  if hasattr(tree, "keys"):
    return {k: _plain(tree[k]) for k in tree.keys()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_plain(x) for x in tree)
  return tree


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def count_jax_params(params) -> int:
  return int(sum(np.size(x) for x in _leaves(_plain(params))))


def _leaves(tree):
  if isinstance(tree, dict):
    return [l for v in tree.values() for l in _leaves(v)]
  if isinstance(tree, (list, tuple)):
    return [l for v in tree for l in _leaves(v)]
  return [tree]


# --- parity ----------------------------------------------------------------------------------

def check_parity(cfg, params, inputs, predict) -> dict:
  """Runs JAX `predict(params, inputs)` (anira_jax.runs.predictor) and the twin on `inputs`:
  {"max_logit_diff", "depths_equal", "params_equal", "jax_params", "torch_params",
   "iterations", "jax_iterations", "mean_depth", "faithful"} with faithful = logits within 1e-4,
  depths exact and parameter counts equal. The twin exits early; so does a "while" predictor,
  and then the iteration counts agree too."""
  twin = from_jax(cfg, params)
  with torch.no_grad():
    logits, aux = twin(torch.from_numpy(np.asarray(inputs, np.int64)))
  ref = predict(params, np.asarray(inputs, np.int32))
  ref_logits, ref_depth = np.asarray(ref["logits"]), np.asarray(ref["depth"])
  max_diff = float(np.max(np.abs(logits.numpy() - ref_logits)))
  depths_equal = bool(np.array_equal(aux["depth"].numpy(), ref_depth))
  n_jax, n_torch = count_jax_params(params), count_params(twin)
  return {"max_logit_diff": max_diff, "depths_equal": depths_equal,
          "params_equal": n_jax == n_torch, "jax_params": n_jax, "torch_params": n_torch,
          "iterations": int(aux["iterations"]), "jax_iterations": int(ref["iterations"]),
          "mean_depth": float(ref_depth[np.asarray(inputs) != PAD].mean()),
          "faithful": bool(max_diff <= LOGIT_TOL and depths_equal and n_jax == n_torch)}
