"""Progress bars that do not flood logs: `progress_bar` is tqdm, redrawn at most every
`LOG_INTERVAL` seconds when its stream is not a terminal (a log file, a pipe, CI), and as
usual on a terminal."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL = 10.0  # seconds between progress lines in a log


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """`tqdm(*args, **kwargs)` with mininterval LOG_INTERVAL unless it writes to a terminal."""
    stream = kwargs.get("file") or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(*args, **kwargs)
