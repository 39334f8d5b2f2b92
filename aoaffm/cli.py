"""How every stage script ends: the project's own errors as one line, bugs with a traceback.

    if __name__ == "__main__":
        run_stage(main, "preprocess")

A user's problem (``aoaffm.errors.AoaffmError``: a bad parameter, bad or missing data, a
diverged or missing run) and a write the machine refused (full disk, no permission,
read-only file system) print ``<stage>: <message>`` on stderr and exit with status 1, where a
traceback from deep inside a library would hide what to do. Anything else propagates: it is a
bug, and its traceback is what a bug report needs.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

from aoaffm.errors import AoaffmError, MissingInput

_NO_SPACE = "no space left on the device; free some space there and run the stage again"
_NO_ACCESS = (
    "permission denied; make the folder writable for you (or work in a copy you own) and "
    "run the stage again"
)
# OS errors that the user fixes outside the program, and what to do about each.
OS_PROBLEMS = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: "disk quota exceeded; free some space there and run the stage again",
    errno.EFBIG: "file too large for this file system (or `ulimit -f`); write elsewhere",
    errno.EACCES: _NO_ACCESS,
    errno.EPERM: _NO_ACCESS,
    errno.EROFS: "read-only file system; write to a writable folder and run the stage again",
}


def os_problem(error: OSError) -> str | None:
    """The one-line message for an OS error in :data:`OS_PROBLEMS`, else None."""
    if error.errno not in OS_PROBLEMS:
        return None
    where = os.fspath(error.filename) if error.filename is not None else "writing a file"
    return f"{where}: {OS_PROBLEMS[error.errno]}"


def require(path: str | os.PathLike, producer: str) -> Path:
    """``path``, an earlier stage's output this stage reads; missing: which stage to run."""
    if not Path(path).is_file():
        raise MissingInput(f"{path}: no such file; run {producer} first")
    return Path(path)


def run_stage(main: Callable[[], object], stage: str) -> None:
    """Run a stage's ``main``; end with one line on stderr and status 1 on a user's problem."""
    try:
        main()
    except AoaffmError as error:
        sys.exit(f"{stage}: {error}")
    except OSError as error:
        message = os_problem(error)
        if message is None:
            raise
        sys.exit(f"{stage}: {message}")
