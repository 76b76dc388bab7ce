"""Real images: modes, EXIF, crops, bad files, every source type and sharding."""

import io
import json
import struct
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from svq.data import (
    HFImages,
    ImageDataset,
    ImageFiles,
    ImageStream,
    Preprocess,
    SmallImageWarning,
    TarShards,
    UnreadableImageError,
    UnreadableImageWarning,
    load_image,
    open_source,
)

# --- helpers


def solid(i: int, size: tuple[int, int] = (24, 20)) -> Image.Image:
    """Image number i: one flat colour whose red channel is 10 * i."""
    return Image.new("RGB", size, (10 * i, 255 - 10 * i, 128))


def ident(image: torch.Tensor) -> int:
    """Which solid(i) a preprocessed tensor came from."""
    return round(float((image[0].mean() + 1) * 127.5) / 10)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png16_rgb(values: tuple[int, int, int], size: int = 4) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + struct.pack(">HHH", *values) * size
    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def bad_files() -> dict[str, bytes]:
    jpeg = encode(solid(3, (64, 64)).effect_spread(4), "JPEG")
    png = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    return {
        "corrupt.jpg": bytes(range(256)) * 4,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) * 2 // 3],
        "empty.png": b"",
        "notes.png": b"this is a text file, not a picture\n",
    }


def make_folder(root: Path, n: int, bad: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = root / f"class{i % 2}"
        sub.mkdir(exist_ok=True)
        solid(i).save(sub / f"{i:03d}.png")
    if bad:
        for name, data in bad_files().items():
            (root / name).write_bytes(data)
    return root


def unreadable_names(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UnreadableImageWarning)]


# --- modes and EXIF

MODES = {
    "L": (lambda: Image.new("L", (8, 8), 100), (100, 100, 100)),
    "1": (lambda: Image.new("1", (8, 8), 1), (255, 255, 255)),
    "LA half transparent black": (lambda: Image.new("LA", (8, 8), (0, 128)), (127, 127, 127)),
    "RGBA transparent": (lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)), (255, 255, 255)),
    "RGBA opaque": (lambda: Image.new("RGBA", (8, 8), (0, 0, 255, 255)), (0, 0, 255)),
    "P": (lambda: Image.new("RGB", (8, 8), (10, 200, 30)).quantize(4), (10, 200, 30)),
    "I;16": (lambda: Image.fromarray(np.full((8, 8), 40000, np.uint16)), (156, 156, 156)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_becomes_rgb_from_a_png_file(mode, tmp_path):
    make, expected = MODES[mode]
    path = tmp_path / "x.png"
    make().save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (8, 8)
    assert np.abs(np.asarray(image)[4, 4].astype(int) - expected).max() <= 1


def test_palette_transparency_cmyk_16bit_rgb_and_deep_grey():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert np.asarray(load_image(encode(palette)))[0, 0].tolist() == [255, 255, 255]
    cmyk = encode(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95)  # cyan
    assert np.abs(np.asarray(load_image(cmyk))[8, 8].astype(int) - (0, 255, 255)).max() <= 8
    rgb16 = load_image(png16_rgb((65535, 32768, 0)))
    assert np.asarray(rgb16)[0, 0].tolist() == [255, 128, 0]
    deep = Image.fromarray(np.full((4, 4), 30000, np.int32), "I")
    assert np.asarray(load_image(deep))[0, 0].tolist() == [117] * 3
    floats = Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")
    assert np.asarray(load_image(floats))[0, 0].tolist() == [128] * 3


IN_MEMORY = {  # modes that rarely come as files but do come from decoders and datasets
    "RGBa": ((100, 50, 0, 128), (227, 177, 127)),  # premultiplied alpha over white
    "La": ((100, 128), (227, 227, 227)),
    "LAB": ((128, 128, 128), (119, 119, 119)),  # L* = 50: mid grey in sRGB
    "HSV": ((0, 255, 255), (255, 0, 0)),
    "YCbCr": ((128, 128, 128), (128, 128, 128)),
}


@pytest.mark.parametrize("mode", list(IN_MEMORY))
def test_unusual_in_memory_modes_become_rgb(mode):
    value, expected = IN_MEMORY[mode]
    image = load_image(Image.new(mode, (4, 4), value))
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image)[2, 2].astype(int) - expected).max() <= 2


def test_exif_orientation_is_honoured(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the left edge becomes the top
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = np.asarray(load_image(tmp_path / "phone.jpg")).astype(int)
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10, 0] > 200 and upright[35, 10, 2] > 200  # red on top, blue below


# --- crops


def test_center_crop_and_scaling():
    image = Image.new("RGB", (300, 200), (255, 0, 0))
    image.paste((0, 0, 0), (0, 0, 30, 200))  # a black band at the left edge, cropped away
    out = Preprocess(64)(image)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert torch.allclose(out[:, 32, 32], torch.tensor([1.0, -1.0, -1.0]))
    assert out[0].min() > 0.9  # the centre square never reaches the left band


def test_random_crop_is_seeded_and_varies():
    image = Image.effect_noise((120, 90), 60).convert("RGB")
    crop = Preprocess(32, train=True, hflip=True)
    a = crop(image, torch.Generator().manual_seed(0))
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, crop(image, torch.Generator().manual_seed(0)))
    others = [crop(image, torch.Generator().manual_seed(s)) for s in range(1, 6)]
    assert any(not torch.equal(a, b) for b in others)
    with pytest.raises(ValueError, match="min_crop_frac"):
        Preprocess(32, min_crop_frac=1.5)


def test_small_images_are_upsampled_with_one_warning(tmp_path):
    Image.new("RGB", (10, 6), (0, 255, 0)).save(tmp_path / "tiny.png")
    data = ImageDataset(tmp_path, size=16, train=True)
    with pytest.warns(SmallImageWarning, match=r"tiny\.png is 10x6"):
        image = data[0]
    assert image.shape == (3, 16, 16) and torch.allclose(image[1], torch.ones(16, 16), atol=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data[0]  # the same file does not warn twice


# --- bad files


def test_bad_files_are_skipped_with_one_warning_each_and_a_count(tmp_path):
    root = make_folder(tmp_path / "mixed", 3, bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = list(ImageStream(root, size=16))
    assert sorted(ident(x) for x in images) == [0, 1, 2]
    messages = unreadable_names(caught)
    for name in bad_files():
        assert sum(name in m for m in messages) == 1, name
    assert any("skipped 5 unreadable of 8" in m for m in messages)
    with pytest.raises(UnreadableImageError, match="empty"):
        load_image(root / "empty.png")
    with pytest.raises(UnreadableImageError, match=r"(?i)truncated"):
        load_image(root / "truncated.jpg")


def test_map_style_dataset_substitutes_the_next_readable_image(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.png").write_bytes(b"")  # sorted first
    solid(4).save(root / "b.png")
    data = ImageDataset(root, size=8)
    with pytest.warns(UnreadableImageWarning, match=r"a\.png .*1 skipped so far"):
        assert ident(data[0]) == 4
    assert ident(data[0]) == 4 and data.skipped == 1 and len(data) == 2


def test_a_source_with_nothing_readable_is_a_clear_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    for name, data in bad_files().items():
        (root / name).write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no readable image"):
            list(ImageStream(root, size=8))
        with pytest.raises(ValueError, match="no readable image"):
            next(iter(ImageStream(root, size=8, repeat=True)))  # no endless retry
        with pytest.raises(ValueError, match="no readable image"):
            ImageDataset(root, size=8)[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageStream(tmp_path / "empty", size=8)
    with pytest.raises(FileNotFoundError):
        ImageDataset(tmp_path / "missing", size=8)


# --- sources


def test_folder_is_scanned_recursively_and_file_lists_work(tmp_path):
    root = make_folder(tmp_path / "tree", 4)
    solid(7).save(root / "class1" / "UPPER.JPG", quality=95)
    (root / "readme.txt").write_text("not an image")
    (root / ".cache").mkdir()
    solid(9).save(root / ".cache" / "hidden.png")
    files = ImageFiles.from_folder(root)
    assert len(files) == 5 and not any(".cache" in str(p) for p in files.paths)
    (tmp_path / "list.json").write_text(
        json.dumps(["tree/class0/000.png", str(root / "class1/001.png")])
    )
    (tmp_path / "list.txt").write_text("tree/class0/002.png\n\n")
    assert [ident(x) for x in ImageStream(tmp_path / "list.json", size=8)] == [0, 1]
    assert [ident(x) for x in ImageDataset(tmp_path / "list.txt", size=8)] == [2]


def test_hugging_face_datasets_saved_to_disk_and_imagefolder(tmp_path):
    import datasets

    rows = [{"bytes": encode(solid(i)), "path": None} for i in range(3)]
    rows.append({"bytes": b"not an image", "path": None})
    ds = datasets.Dataset.from_dict({"img": rows, "label": [0, 1, 2, 3]})
    ds = ds.cast_column("img", datasets.Image())
    ds.save_to_disk(tmp_path / "saved")
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(tmp_path / "dict")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sorted(ident(x) for x in ImageStream(tmp_path / "saved", size=8)) == [0, 1, 2]
    messages = unreadable_names(caught)
    assert any("saved[3]" in m for m in messages) and any(
        "1 unreadable of 4" in m for m in messages
    )
    assert [ident(x) for x in ImageDataset(HFImages.from_disk(tmp_path / "dict", "test"), 8)] == [1]
    assert [ident(ImageDataset(ds, size=8)[i]) for i in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="no split 'val'"):
        HFImages.from_disk(tmp_path / "dict", "val")
    with pytest.raises(ValueError, match="no Image column"):
        HFImages(datasets.Dataset.from_dict({"x": [1]}))
    folder = make_folder(tmp_path / "imagefolder", 4)
    images = HFImages.from_imagefolder(folder, cache_dir=str(tmp_path / "cache"))
    assert len(images) == 4
    assert sorted(ident(x) for x in ImageStream(images, size=8)) == [0, 1, 2, 3]


def write_shards(root: Path, per_shard: list[list[int]], extra: bool = False) -> list[Path]:
    """Tar shards of solid(i) images: KEY.png (+ KEY.json); with extra, the first shard also
    holds a corrupt image and a sample with no image, and one more shard is cut short."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, items in enumerate(per_shard):
        path = root / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            members = []
            for i in items:
                members += [(f"{i:04d}.png", encode(solid(i))), (f"{i:04d}.json", b'{"i": %d}' % i)]
            if extra and s == 0:
                members += [("bad.jpg", b"garbage"), ("meta-only.json", b"{}")]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    if extra:
        whole = paths[0].read_bytes()
        (root / "shard-cut.tar").write_bytes(whole[: len(whole) // 2 + 100])
    return paths


def test_tar_shards_with_brace_patterns_and_bad_members(tmp_path):
    write_shards(tmp_path / "tars", [[0, 1], [2, 3], [4]], extra=True)
    pattern = str(tmp_path / "tars" / "shard-{000..002}.tar")
    shards = TarShards(pattern)
    assert len(shards) == 3
    samples = list(shards.samples(shards.shards[1], on_error=None))
    assert [s.key for s in samples] == ["0002", "0003"] and samples[0].meta == {"i": 2}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = list(ImageStream(pattern, size=8))
    assert sorted(ident(x) for x in images) == [0, 1, 2, 3, 4]
    messages = unreadable_names(caught)
    assert any("bad.jpg" in m for m in messages) and any("meta-only" in m for m in messages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = list(ImageStream([str(tmp_path / "tars/shard-cut.tar"), pattern], size=8))
    assert len(cut) >= 5 and any("shard-cut.tar" in m for m in unreadable_names(caught))
    with pytest.raises(FileNotFoundError, match="not found"):
        TarShards(str(tmp_path / "tars" / "shard-{000..005}.tar"))
    assert isinstance(open_source(pattern), TarShards)


# --- sharding over ranks and workers


def test_streams_shard_over_ranks(monkeypatch, tmp_path):
    root = make_folder(tmp_path / "f", 7)
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append([ident(x) for x in ImageStream(root, size=8, shuffle=True, seed=1)])
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(7))
    monkeypatch.setenv("RANK", "0")
    again = [ident(x) for x in ImageStream(root, size=8, shuffle=True, seed=1)]
    assert again == seen[0]  # the same order on every run
    full = [ident(x) for x in ImageStream(root, size=8, shard_by_rank=False)]
    assert sorted(full) == list(range(7))


@pytest.mark.parametrize("layout", [[[0, 1, 2], [3, 4], [5, 6, 7]], [[0, 1, 2, 3, 4]]])
def test_tar_streams_split_over_workers_without_repeats(layout, tmp_path):
    paths = write_shards(tmp_path / "tars", layout)
    stream = ImageStream([str(p) for p in paths], size=8, shuffle=True, shuffle_buffer=4)
    loader = DataLoader(stream, batch_size=2, num_workers=2)
    seen = sorted(ident(x) for batch in loader for x in batch)
    assert seen == sorted(i for items in layout for i in items)


def test_repeating_stream_goes_round_again(tmp_path):
    root = make_folder(tmp_path / "f", 3)
    stream = iter(ImageStream(root, size=8, repeat=True, shuffle=True))
    first = [ident(next(stream)) for _ in range(6)]
    assert sorted(first[:3]) == sorted(first[3:]) == [0, 1, 2]


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from accelerate import Accelerator
from torch.utils.data import DataLoader
from svq.data import ChatWorldStream, ImageDataset, ImageStream

accelerator = Accelerator(cpu=True)  # under torchrun this joins the gloo process group
root, out = sys.argv[1], sys.argv[2]
ident = lambda x: round(float((x[0].mean() + 1) * 127.5) / 10)
stream = DataLoader(ImageStream(root, size=8, shuffle=True), batch_size=2, num_workers=2)
mapped = accelerator.prepare(DataLoader(ImageDataset(root, size=8), batch_size=2, shuffle=True))
world = DataLoader(ChatWorldStream(size=16, seed=0), batch_size=2, num_workers=2)
mine = {
    "stream": [ident(x) for batch in stream for x in batch],
    "mapped": [ident(x) for batch in mapped for x in batch],
    "pictures": [x.flatten().tolist() for batch, _ in zip(world, range(2)) for x in batch],
}
gathered = [None, None]
dist.all_gather_object(gathered, mine)
if accelerator.is_main_process:
    json.dump(gathered, open(out, "w"))
accelerator.end_training()
"""


def test_two_processes_under_torch_distributed_and_accelerate(tmp_path):
    """torchrun with 2 gloo ranks (through accelerate) x 2 workers: each rank reads its own
    shard of a folder, as a self-sharding stream and as a map-style dataset that
    `accelerator.prepare` shards, and renders its own chat-world pictures; together they
    cover everything exactly once."""
    import os
    import subprocess
    import sys

    root = make_folder(tmp_path / "f", 12)
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", str(script), str(root), str(out)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = json.loads(out.read_text())
    for kind in ("stream", "mapped"):
        a, b = (r[kind] for r in ranks)
        assert len(a) == len(b) == 6 and sorted(a + b) == list(range(12)), kind
    from svq.data import ChatWorldStream

    pictures = {tuple(p) for r in ranks for p in r["pictures"]}
    stream = iter(ChatWorldStream(size=16, seed=0))
    assert pictures == {tuple(next(stream).flatten().tolist()) for _ in range(8)}
