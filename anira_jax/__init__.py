"""anira_jax: token-level adaptive computation in recurrent Transformers.

`from anira_jax import load_run, tasks`: `load_run` is imported on first use, so importing the
task suite alone stays free of JAX.
"""
from anira_jax import tasks

__all__ = ["Run", "load_run", "tasks"]


def __getattr__(name: str):
  if name in ("Run", "load_run"):
    from anira_jax import runs  # pylint: disable=import-outside-toplevel
    return getattr(runs, name)
  raise AttributeError(f"module 'anira_jax' has no attribute {name!r}")
