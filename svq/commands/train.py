"""`svq train STAGE CONFIG.yaml [--flag value ...]`: the training scripts under one command.

Same options as running the script (`python -m svq.train.stage1 CONFIG.yaml ...`); `svq train
STAGE --help` lists them. Multi-process runs use the scripts directly under torchrun or
`accelerate launch` (README, "Scaling out").
"""

from __future__ import annotations

import argparse

from svq.train import TRAINERS, trainer


def run(args: argparse.Namespace) -> int:
    from svq.train import common

    module, options_class = trainer(args.stage)
    options = common.parse_options(options_class, args.options, prog=f"svq train {args.stage}")
    try:
        summary = module.main(options)
    except common.NonFiniteLossError as error:
        print(f"svq train {args.stage}: {error}")
        return 1
    print(
        f"svq train {args.stage}: done; release folder {summary.get('model', options.output_dir)}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    stages = "\n".join(f"  {name:8s}{what}" for name, (_, _, what) in TRAINERS.items())
    p = sub.add_parser(
        "train",
        help="run a training stage: " + ", ".join(TRAINERS),
        description=f"Run a training stage in this process.\n\nstages:\n{stages}\n\n"
        "OPTIONS: a YAML config (svq/configs/) first, then --flag value overrides; "
        "`svq train STAGE --help` lists a stage's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stage", choices=sorted(TRAINERS), help="which stage")
    p.add_argument("options", nargs=argparse.REMAINDER, help="CONFIG.yaml [--flag value ...]")
    p.set_defaults(run=run)
