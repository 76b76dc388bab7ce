"""`svq world`: write the chat world (pictures, metadata, captions, dialogues) to a folder."""

from __future__ import annotations

import argparse

from .captions import LANGUAGES
from .writer import write_world


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "world",
        help="write chat-world pictures, captions and dialogues as an image folder",
        description="Render the chat world into OUT/{train,validation,test,heldout}: PNGs, "
        "metadata.jsonl and dialogues.jsonl per split. Load it with "
        "datasets.load_dataset('imagefolder', data_dir=OUT), or load_dataset(OUT) for all "
        "four splits.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="pictures in the train split")
    parser.add_argument("--size", type=int, default=64, help="square side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument(
        "--n-eval",
        type=int,
        default=None,
        help="pictures in each of validation, test and heldout (default n // 10)",
    )
    parser.add_argument("--lang", default="en", choices=LANGUAGES, help="dialogue language")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing splits")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    summary = write_world(
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        n_eval=args.n_eval,
        lang=args.lang,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=True,
    )
    counts = ", ".join(
        f"{split} {summary.images[split]} ({summary.dialogues[split]} dialogues)"
        for split in summary.images
    )
    print(
        f"wrote {sum(summary.images.values())} pictures to {summary.out} in "
        f"{summary.seconds:.1f} s: {counts}"
    )
    return 0
