"""Where real images come from: a folder tree (or a list of files), a Hugging Face `datasets`
dataset (saved with `save_to_disk`, or an `imagefolder`), and WebDataset tar shards.

Sources only find and read raw items (paths or encoded bytes); decoding, bad-file handling
and cropping happen in loaders.py, the same way for every source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".tga",
)


TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class ImageFiles:
    """A fixed list of image files. `from_folder` scans a tree; `from_list` reads a JSON list
    or a text file of paths (one per line), relative paths being relative to the list."""

    def __init__(self, paths: Sequence[str | Path], name: str = "files"):
        self.paths = [Path(p) for p in paths]
        self.name = name
        if not self.paths:
            raise ValueError(f"{name}: no image files")

    @classmethod
    def from_folder(cls, root: str | Path) -> ImageFiles:
        """Every file under `root` (recursively) with an image extension, in sorted order;
        hidden files and folders (starting with '.') are left out."""
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"image folder {root} does not exist")
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is not a folder")
        paths = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not paths:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
        return cls(paths, name=str(root))

    @classmethod
    def from_list(cls, list_file: str | Path) -> ImageFiles:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"file list {list_file} does not exist")
        text = list_file.read_text(encoding="utf-8")
        if list_file.suffix.lower() == ".json":
            entries = json.loads(text)
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ValueError(f"{list_file}: expected a JSON list of path strings")
        else:
            entries = [line.strip() for line in text.splitlines() if line.strip()]
        paths = [p if Path(p).is_absolute() else list_file.parent / p for p in entries]
        return cls(paths, name=str(list_file))

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int) -> tuple[str, Path]:
        """(name for messages, raw item to decode) of item `index`."""
        return str(self.paths[index]), self.paths[index]

    def __repr__(self) -> str:
        return f"ImageFiles({self.name!r}, {len(self)} files)"


class HFImages:
    """The image column of a Hugging Face `datasets.Dataset`, read undecoded (bytes or path)
    so that a bad image is skipped like any other instead of failing inside `datasets`."""

    def __init__(self, dataset: Any, image_column: str | None = None, name: str = "dataset"):
        import datasets

        if isinstance(dataset, datasets.DatasetDict):
            raise ValueError(f"{name}: pick a split of the DatasetDict {list(dataset)}")
        columns = {k: v for k, v in dataset.features.items() if isinstance(v, datasets.Image)}
        if image_column is None:
            if not columns:
                raise ValueError(f"{name}: no Image column among {list(dataset.features)}")
            image_column = next(iter(columns))
        elif image_column not in columns:
            raise ValueError(f"{name}: {image_column!r} is not an Image column ({list(columns)})")
        self.column = image_column
        self.dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self.name = name
        if len(self.dataset) == 0:
            raise ValueError(f"{name}: the dataset is empty")

    @classmethod
    def from_disk(cls, path: str | Path, split: str = "train", image_column: str | None = None):
        """A dataset saved with `save_to_disk` (a Dataset, or a DatasetDict and its `split`)."""
        import datasets

        if not Path(path).exists():
            raise FileNotFoundError(f"saved dataset {path} does not exist")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path}: no split {split!r}, have {list(loaded)}")
            loaded = loaded[split]
        return cls(loaded, image_column, name=str(path))

    @classmethod
    def from_imagefolder(
        cls, data_dir: str | Path, split: str = "train", cache_dir: str | None = None
    ) -> HFImages:
        """A folder read with `datasets.load_dataset("imagefolder", data_dir=...)`."""
        import datasets

        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"image folder {data_dir} does not exist")
        loaded = datasets.load_dataset(
            "imagefolder", data_dir=str(data_dir), split=split, cache_dir=cache_dir
        )
        return cls(loaded, "image", name=str(data_dir))

    def __len__(self) -> int:
        return len(self.dataset)

    def item(self, index: int) -> tuple[str, bytes | str | None]:
        """(name for messages, raw item to decode): the encoded bytes, else the file path,
        else None (a row without an image)."""
        cell = self.dataset[int(index)][self.column] or {}
        name = cell.get("path") or f"{self.name}[{index}]"
        if cell.get("bytes") is not None:
            return name, cell["bytes"]
        return name, cell.get("path") or None

    def __repr__(self) -> str:
        return f"HFImages({self.name!r}, column {self.column!r}, {len(self)} rows)"


@dataclass
class TarSample:
    key: str  # the member name without its extension, e.g. "shard-000/000123"
    name: str  # "<shard>:<key>.<ext>" for messages
    image: bytes | None  # the first image member, None when the sample has none
    meta: dict[str, Any] | None  # the parsed KEY.json member, if any


class TarShards:
    """WebDataset tar shards: members KEY.jpg / KEY.png ... (+ optional KEY.json) grouped by
    KEY. `urls` is a brace pattern ("data/shard-{000..009}.tar"), several joined by "::", or
    a list of paths/patterns. Reading uses the `webdataset` package's tar iterators."""

    def __init__(self, urls: str | Sequence[str]):
        from webdataset.shardlists import expand_urls

        patterns = [urls] if isinstance(urls, str) else list(urls)
        self.shards = [shard for pattern in patterns for shard in expand_urls(str(pattern))]
        if not self.shards:
            raise ValueError(f"no tar shards in {urls!r}")
        missing = [s for s in self.shards if _is_local(s) and not Path(s).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} tar shard(s) not found: {missing[:5]}")
        self.name = patterns[0] if len(patterns) == 1 else f"{len(self.shards)} shards"

    def __len__(self) -> int:
        return len(self.shards)

    def samples(self, shard: str, on_error: Any) -> Iterator[TarSample]:
        """The samples of one shard in order. A shard that is not a readable tar (or breaks
        off) calls `on_error(shard, reason)` and ends there."""
        from webdataset.tariterators import tarfile_samples

        def handler(error: Exception) -> bool:
            on_error(shard, f"{type(error).__name__}: {error.args[0] if error.args else ''}")
            return True  # go on with the next shard

        for sample in tarfile_samples([{"url": shard}], handler=handler):
            key = sample["__key__"]
            ext = next((e for e in sample if _is_image_ext(e)), None)
            meta = None
            if "json" in sample:
                try:
                    meta = json.loads(sample["json"])
                except ValueError:
                    meta = None
            name = f"{shard}:{key}.{ext}" if ext else f"{shard}:{key}"
            yield TarSample(key, name, sample[ext] if ext else None, meta)

    def __repr__(self) -> str:
        return f"TarShards({self.name!r}, {len(self)} shards)"


def _is_image_ext(suffix: str) -> bool:
    return not suffix.startswith("__") and f".{suffix.rsplit('.', 1)[-1]}" in IMAGE_EXTENSIONS


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


Source = ImageFiles | HFImages | TarShards


def open_source(spec: str | Path | Sequence[str] | Any, split: str = "train") -> Source:
    """Guess the source from `spec`: a `datasets.Dataset`; a folder saved with `save_to_disk`
    (has dataset_info.json / dataset_dict.json / state.json); any other folder (scanned for
    images); a .json / .txt list of files; a .tar path, brace pattern or list of shards."""
    if isinstance(spec, ImageFiles | HFImages | TarShards):
        return spec
    if not isinstance(spec, str | Path | list | tuple):
        return HFImages(spec)  # a datasets.Dataset (or something that fails loudly there)
    if isinstance(spec, list | tuple):
        return TarShards([str(s) for s in spec])
    text = str(spec)
    if "{" in text or "::" in text or text.endswith(TAR_SUFFIXES):
        return TarShards(text)
    path = Path(text)
    if path.is_dir():
        saved = ("dataset_info.json", "dataset_dict.json", "state.json")
        if any((path / name).is_file() for name in saved):
            return HFImages.from_disk(path, split)
        return ImageFiles.from_folder(path)
    if path.suffix.lower() in (".json", ".txt"):
        return ImageFiles.from_list(path)
    raise FileNotFoundError(f"no image source at {text}: not a folder, file list or tar shard")
