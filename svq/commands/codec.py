"""`svq encode`, `svq decode`, `svq reconstruct`: pictures <-> the 36 ids of a tokenizer
folder (a stage-2 release, which carries its codebook).

    svq encode photo.png --model runs/demo/stage2/model --out ids.json
    svq decode ids.json --model runs/demo/stage2/model --out decoded.png
    svq reconstruct photo.png --model runs/demo/stage2/model --out side_by_side.png
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from ..data import Preprocess, load_image_file
from ..images import save_grid, save_image
from ..model import StyledVAEVQ
from .chat import IMAGE_SUFFIXES


def read_pictures(paths: list[str], size: int) -> torch.Tensor:
    """Image files -> (B, 3, size, size) in [-1, 1] (centre crop); errors name the file."""
    preprocess = Preprocess(size)
    return torch.stack([preprocess(load_image_file(path, size)) for path in paths])


def image_files(paths: list[str]) -> list[str]:
    """The paths, each folder replaced by the image files directly in it (by name); a folder
    without any is an error naming it."""
    files = []
    for path in paths:
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = sorted(str(p) for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(
                f"{path} is a folder with no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        files.extend(found)
    return files


def read_ids(source: str) -> list[list[int]]:
    """Ids from a JSON file written by `svq encode` ({"images": [{"ids": [...]}, ...]}), a JSON
    list (one image) or list of lists, or a comma/space-separated string of integers."""
    text = Path(source).read_text() if Path(source).is_file() else source
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [int(x) for x in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(
                f"ids {source[:60]!r}: not a file, JSON, or a list of integers"
            ) from None
    if isinstance(data, dict):
        data = [entry["ids"] for entry in data.get("images", [])]
    if isinstance(data, int):  # "-3" or "7": one id
        data = [data]
    if data and all(isinstance(x, int) for x in data):
        data = [data]
    if not data or not all(isinstance(row, list) and row for row in data):
        raise ValueError(f"ids {source[:60]!r}: expected one or more non-empty lists of ids")
    if not all(isinstance(x, int) for row in data for x in row):
        raise ValueError(f"ids {source[:60]!r}: every id must be an integer")
    return data


def check_ids(ids: list[list[int]], model: StyledVAEVQ) -> torch.Tensor:
    """(B, N) long after checking the length (N tokens) and range [0, K) against the model."""
    n, k = model.config.num_tokens, model.codebook.num_codes
    for i, row in enumerate(ids):
        if len(row) != n:
            raise ValueError(f"image {i}: {len(row)} ids, this tokenizer reads exactly {n}")
        bad = [x for x in row if not 0 <= x < k]
        if bad:
            raise ValueError(f"image {i}: ids {bad[:5]} out of range [0, {k})")
    return torch.tensor(ids, dtype=torch.long)


def numbered(out: Path, index: int, count: int) -> Path:
    """OUT for one image; OUT_0.png, OUT_1.png, ... for several."""
    return out if count == 1 else out.with_name(f"{out.stem}_{index}{out.suffix or '.png'}")


NEGATIVE_IDS = re.compile(r"^-\d+([,\s]+-?\d+)*[,\s]*$")


# --- the commands ---------------------------------------------------------------------------


@torch.no_grad()
def encode(args: argparse.Namespace) -> int:
    paths = image_files(args.images)
    model = StyledVAEVQ.load(args.model, require_codebook=True)
    ids = model.tokenize(read_pictures(paths, model.config.image_size))
    rows = zip(paths, ids.tolist(), strict=True)
    record = {"model": str(args.model), "images": [{"path": p, "ids": r} for p, r in rows]}
    text = json.dumps(record)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"{len(paths)} image(s) x {ids.shape[1]} ids -> {args.out}")
    else:
        print(text)
    return 0


@torch.no_grad()
def decode(args: argparse.Namespace) -> int:
    model = StyledVAEVQ.load(args.model, require_codebook=True)
    ids = check_ids(read_ids(args.ids), model)
    pictures = model.detokenize(ids).clamp(-1, 1)
    out = Path(args.out)
    for i, picture in enumerate(pictures):
        path = save_image(picture, numbered(out, i, len(pictures)))
        print(f"wrote {path}")
    return 0


@torch.no_grad()
def reconstruct(args: argparse.Namespace) -> int:
    from svq.eval.metrics import psnr  # eval is part of this distribution

    model = StyledVAEVQ.load(args.model, require_codebook=not args.continuous)
    originals = read_pictures([args.image], model.config.image_size)
    features = model.encode(originals)
    if not args.continuous:
        features = model.codebook.lookup(model.codebook.quantize(features))
    recon = model.decode(features).clamp(-1, 1)
    path = save_grid([originals, recon], args.out)
    kind = "continuous features" if args.continuous else "codebook ids"
    print(f"PSNR {psnr(recon, originals).item():.2f} dB through {kind}; "
          f"original (top) vs reconstruction (bottom): {path}")  # fmt: skip
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="pictures -> 36 codebook ids each (JSON)")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.add_argument("--model", required=True, help="tokenizer folder with a codebook (stage 2)")
    p.add_argument("--out", help="JSON file to write (default: print)")
    p.set_defaults(run=encode)

    p = sub.add_parser("decode", help="36 ids per picture -> PNG")
    # argparse takes any word that starts with "-" for an option unless it looks like one
    # negative number; a list such as "-1,-1,..." is ids too (and gets the range error)
    p._negative_number_matcher = NEGATIVE_IDS
    p.add_argument("ids", help="a JSON file from `svq encode`, a JSON list, or '3,17,...'")
    p.add_argument("--model", required=True, help="tokenizer folder with a codebook (stage 2)")
    p.add_argument("--out", default="decoded.png", help="PNG (OUT_i.png for several pictures)")
    p.set_defaults(run=decode)

    p = sub.add_parser("reconstruct", help="picture -> ids -> picture, side by side, with PSNR")
    p.add_argument("image", help="an image file")
    p.add_argument("--model", required=True, help="tokenizer folder")
    p.add_argument("--out", default="reconstruction.png", help="PNG to write")
    p.add_argument(
        "--continuous", action="store_true", help="skip the codebook (a stage-1 model works)"
    )
    p.set_defaults(run=reconstruct)
