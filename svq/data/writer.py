"""Write the chat world to disk as a Hugging Face image folder with dialogues.

    OUT/
      README.md        YAML `configs` naming the four splits, so load_dataset(OUT) finds all
      world.json       options, counts and the attribute schema
      train/ validation/ test/ heldout/
        000000.png ...
        metadata.jsonl   one row per picture: file_name, attributes, layout, captions, ...
        dialogues.jsonl  one chat per line; each image part names its file and attributes

`datasets.load_dataset("imagefolder", data_dir=OUT)` gives train / validation / test;
`load_dataset(str(OUT))` also gives heldout (pictures of identities that never appear in the
other splits). Every picture belongs to exactly one dialogue of its split.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..progress import progress_bar
from .captions import captions
from .dialogues import make_dialogue
from .render import MIN_SIZE, render
from .sampler import SPLITS, sample_identity, split_seed
from .schema import HELD_OUT_FRACTION, IDENTITY_ATTRIBUTES, SCHEMA, WorldRecord

METADATA = "metadata.jsonl"
DIALOGUES = "dialogues.jsonl"
RENDER_BATCH = 2048  # pictures rendered per batch: bounds memory for any n


@dataclass
class WorldSummary:
    out: Path
    images: dict[str, int]  # per split
    dialogues: dict[str, int]  # per split
    seconds: float


def split_sizes(n: int, n_eval: int | None = None) -> dict[str, int]:
    """Pictures per split: `n` for train and `n_eval` (default n // 10) for each other."""
    n_eval = n // 10 if n_eval is None else n_eval
    if n < 1 or n_eval < 0:
        raise ValueError(f"need n >= 1 and n_eval >= 0, got n={n}, n_eval={n_eval}")
    return {split: n if split == "train" else n_eval for split in SPLITS}


def iter_split(
    seed: int,
    split: str,
    count: int,
    lang: str = "en",
    request_kinds: Sequence[str] | None = None,
    opening_season: str = "other",
    when_first: bool = False,
    asked_first: bool = False,
) -> Iterator[tuple[list[dict[str, Any]], list[WorldRecord], dict[str, Any]]]:
    """The dialogues of one split, in order, until they hold `count` pictures. Per dialogue:
    its metadata rows, the records of its pictures and the JSON-ready chat. `request_kinds`,
    `opening_season`, `when_first`, `asked_first`: see `make_dialogue`."""
    width = max(6, len(str(max(count - 1, 0))))
    done = index = 0
    while done < count:
        dialogue_seed = split_seed(seed, split, index, kind="dialogue")
        rng = random.Random(dialogue_seed)
        held_out = split == "heldout"
        persona, user = sample_identity(rng, held_out), sample_identity(rng, held_out)
        chat = make_dialogue(rng, persona, user, max_images=count - done, lang=lang,
                             request_kinds=request_kinds,
                             opening_season=opening_season, when_first=when_first,
                             asked_first=asked_first)  # fmt: skip
        chat_id = f"{split}-{index:0{width}d}"
        names = [f"{done + k:0{width}d}.png" for k in range(len(chat.images))]
        rows = [
            {
                "file_name": name,
                **record.to_dict(),
                "captions": captions(record),
                "identity": record.identity.key(),
                "dialogue": chat_id,
                "shared_by": by,
                "seed": dialogue_seed,
            }
            for name, record, by in zip(names, chat.images, chat.shared_by, strict=True)
        ]
        yield rows, chat.images, chat.to_json(names, chat_id)
        done += len(rows)
        index += 1


def _render_save(job: tuple[str, WorldRecord, int]) -> None:
    path, record, size = job
    render(record, size).save(path, format="PNG", compress_level=1)


def write_world(
    out: str | Path,
    n: int,
    size: int = 64,
    seed: int = 0,
    n_eval: int | None = None,
    lang: str = "en",
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> WorldSummary:
    """Render the four splits into `out` (see the module docstring). Refuses to write over
    existing split folders unless overwrite=True, which deletes them first. Pictures are
    rendered in batches (by `workers` processes when > 1), so memory stays flat for any n."""
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    sizes = split_sizes(n, n_eval)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    existing = [s for s in SPLITS if (out / s).exists()]
    if existing and not overwrite:
        raise ValueError(f"{out} already has {existing}; pass overwrite=True (--overwrite)")
    for split in existing:
        shutil.rmtree(out / split)
    start = time.perf_counter()
    images: dict[str, int] = {}
    dialogues: dict[str, int] = {}
    bar = progress_bar(total=sum(sizes.values()), unit="pic", disable=not progress)
    with ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(workers)) if workers > 1 else None
        for split, count in sizes.items():
            if count == 0:
                continue
            folder = out / split
            folder.mkdir(parents=True)
            jobs: list[tuple[str, WorldRecord, int]] = []
            images[split] = dialogues[split] = 0
            with (
                (folder / METADATA).open("w", encoding="utf-8") as metadata,
                (folder / DIALOGUES).open("w", encoding="utf-8") as chats,
            ):
                for rows, records, chat in iter_split(seed, split, count, lang):
                    metadata.writelines(_json_line(row) for row in rows)
                    chats.write(_json_line(chat))
                    for row, record in zip(rows, records, strict=True):
                        jobs.append((str(folder / row["file_name"]), record, size))
                    images[split] += len(rows)
                    dialogues[split] += 1
                    if len(jobs) >= RENDER_BATCH:
                        _render_all(jobs, pool, bar)
            _render_all(jobs, pool, bar)
    bar.close()
    _write_readme(out, list(images))
    info = {
        "seed": seed, "size": size, "lang": lang, "images": images, "dialogues": dialogues,
        "schema": {name: list(values) for name, values in SCHEMA.items()},
        "identity_attributes": list(IDENTITY_ATTRIBUTES), "held_out_fraction": HELD_OUT_FRACTION,
    }  # fmt: skip
    (out / "world.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return WorldSummary(out, images, dialogues, time.perf_counter() - start)


def _render_all(jobs: list, pool: ProcessPoolExecutor | None, bar: Any) -> None:
    """Render and save every job, then empty the list."""
    if pool is None:
        for job in jobs:
            _render_save(job)
    else:
        list(pool.map(_render_save, jobs, chunksize=64))
    bar.update(len(jobs))
    jobs.clear()


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def _write_readme(out: Path, splits: list[str]) -> None:
    files = "\n".join(f"  - split: {s}\n    path: {s}/*" for s in splits)
    out.joinpath("README.md").write_text(
        f"---\nconfigs:\n- config_name: default\n  data_files:\n{files}\n---\n"
        "# svq chat world\n\nRendered by `svq world`. Each split folder holds the pictures, "
        f"`{METADATA}` (attributes, layout, captions) and `{DIALOGUES}` (chats whose image "
        "parts name their files). `heldout` shows identities that never appear in the other "
        "splits.\n"
    )


def load_dialogues(split_dir: str | Path) -> list[dict[str, Any]]:
    """The dialogues of one split folder, with every image part's "path" made absolute."""
    split_dir = Path(split_dir)
    path = split_dir / DIALOGUES
    if not path.is_file():
        raise FileNotFoundError(f"no {DIALOGUES} in {split_dir}")
    chats = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    for chat in chats:
        for message in chat["messages"]:
            for part in message["content"]:
                if part["type"] == "image":
                    part["path"] = str((split_dir / part["path"]).resolve())
    return chats
