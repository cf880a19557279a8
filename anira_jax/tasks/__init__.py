"""Task registry: `tasks.get(name, **options)` returns a `Task`; `tasks.names()` lists them.

A family is found by its module name: `anira_jax/tasks/<name>.py` defines one `Task` subclass
whose `name` is "<name>". Every module of this package is a family except `base`,
`tfds_builder` and private ones (`_x`, `__main__`); a family is imported when first asked for.
"""
import importlib
import pkgutil

from anira_jax.tasks.base import PAD, SEP, Example, Task

_NOT_FAMILIES = ("base", "tfds_builder")


def names() -> list[str]:
  """The families: this package's modules but `base`, `tfds_builder` and private ones."""
  found = (m.name for m in pkgutil.iter_modules(__path__))
  return sorted(n for n in found if not n.startswith("_") and n not in _NOT_FAMILIES)


def _family(name: str) -> type[Task]:
  """The Task subclass of module anira_jax.tasks.<name> whose `name` is `name`."""
  module = importlib.import_module(f"{__name__}.{name}")
  found = [v for v in vars(module).values()
           if isinstance(v, type) and issubclass(v, Task) and getattr(v, "name", None) == name]
  if len(found) != 1:
    raise ValueError(f"{module.__file__} must define one Task subclass with name = {name!r}, "
                     f"found {len(found)}")
  return found[0]


def get(name: str, **options) -> Task:
  """The task called `name`, with its family-specific knobs (e.g. num_values=16)."""
  if name not in names():
    raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(names())}")
  cls = _family(name)
  try:
    return cls(**options)
  except TypeError as e:
    raise ValueError(f"bad options for task {name!r}: {e}") from None


__all__ = ["PAD", "SEP", "Example", "Task", "get", "names"]
