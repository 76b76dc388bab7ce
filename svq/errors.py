"""What the command line and the training scripts report as a user's bad input: one line
naming the file (or option) at fault, exit status 2, no traceback.

The library raises ordinary exceptions whose messages name what is wrong (`ValueError` and
its subclasses such as `UnreadableImageError`, `FileNotFoundError`, ...); the entry points
(`svq.cli.main`, `svq.train.common.run_script`) catch these kinds, and only these, in one place.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
EXIT_INPUT = 2  # argparse's status for a bad command line


def report(prog: str, error: BaseException) -> int:
    """Print `PROG: error: MESSAGE` to stderr; returns the exit status for bad input."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return EXIT_INPUT
