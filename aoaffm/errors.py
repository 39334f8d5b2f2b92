"""The project's error types: problems a user fixes (a parameter, an input file, a missing or
damaged earlier output), as opposed to bugs.

Every message is one line that names the file (and line, where there is one), what was
expected and what to do. The stage scripts print it as such (``aoaffm.cli.run_stage``); any
other exception is a bug and keeps its traceback. The layer-specific types derive from
:class:`AoaffmError`: ``ConfigError`` (params.yaml), ``DataError`` (input data),
``TrainingDiverged`` and ``RunMismatch`` (training).
"""

from __future__ import annotations


class AoaffmError(Exception):
    """A problem the user can fix; the message says which file, what was expected, what to do."""


class ConfigError(AoaffmError, ValueError):
    """A parameter has a value the protocol cannot use (or a key nothing reads)."""


class MissingInput(AoaffmError, FileNotFoundError):
    """An output of an earlier stage that this one needs does not exist (a pretrained model,
    a finished run, results/runs.json); the message names the stage to run first."""


class UnreadableFile(AoaffmError, ValueError):
    """A file the pipeline wrote earlier (a model, a checkpoint, a JSON record) is cut short,
    was written by something else or does not fit this run."""


def first_line(error: BaseException) -> str:
    """A library's error message cut to its first line and sentence, to quote inside ours
    (what follows is often advice that does not fit, e.g. torch's on ``weights_only``)."""
    lines = str(error).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__
