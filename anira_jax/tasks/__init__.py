"""Task registry: `tasks.get(name, **options)` returns a `Task`; `tasks.names()` lists them."""
from anira_jax.tasks import addition, chase, dyck, graph, modarith, sorting
from anira_jax.tasks.base import PAD, SEP, Example, Task

_REGISTRY: dict[str, type[Task]] = {
    "sorting": sorting.Sorting,
    "graph": graph.Graph,
    "dyck": dyck.Dyck,
    "addition": addition.Addition,
    "modarith": modarith.ModArith,
    "chase": chase.Chase,
}


def names() -> list[str]:
  return sorted(_REGISTRY)


def get(name: str, **options) -> Task:
  """The task called `name`, with its family-specific knobs (e.g. num_values=16)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(names())}")
  try:
    return _REGISTRY[name](**options)
  except TypeError as e:
    raise ValueError(f"bad options for task {name!r}: {e}") from None


__all__ = ["PAD", "SEP", "Example", "Task", "get", "names"]
