"""The `svq` command line: one sub-command per job, each with its own --help."""

from __future__ import annotations

import argparse
import sys

from svq.eval import cli as evaluation

from . import demo
from .commands import chat, codec, train
from .data import command as world
from .errors import INPUT_ERRORS, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svq", description="svq: an ordered 36-token image language for small LLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # explicit wiring: each module adds its parser(s)
    for command in (demo, world, train, codec, chat, evaluation):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except INPUT_ERRORS as error:
        return report(f"svq {args.command}", error)


if __name__ == "__main__":
    sys.exit(main())
