"""The errors the library raises for the command line to report: one line, a fitting exit code."""


class UserError(Exception):
  """Something the user can fix; its message says what and how."""


class Stopped(Exception):
  """Training stopped by a signal after saving a checkpoint: the same command resumes it."""
