"""`svq encode / decode / reconstruct / chat / train`: the happy paths and the bad-input errors
(missing model folder, unreadable image, ids of the wrong length or out of range)."""

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_llm_tiny import build_chat

from svq import StyledVAEVQ, SVQConfig
from svq.cli import main
from svq.commands.chat import converse, parse_message
from svq.data import render, world_record
from svq.images import upscale_nearest


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(2):
        path = folder / f"p{i}.png"
        render(world_record(0, "validation", i), 48).save(path)  # resized to 32 by the command
        paths.append(str(path))
    return paths


def test_encode_decode_round_trip(tmp_path, tokenizer_dir, photos, capsys):
    ids_file = tmp_path / "ids.json"
    assert main(["encode", *photos, "--model", str(tokenizer_dir), "--out", str(ids_file)]) == 0
    record = json.loads(ids_file.read_text())
    assert [r["path"] for r in record["images"]] == photos
    ids = torch.tensor([r["ids"] for r in record["images"]])
    assert ids.shape == (2, 36) and int(ids.min()) >= 0 and int(ids.max()) < 32
    model = StyledVAEVQ.from_pretrained(tokenizer_dir)
    assert main(["decode", str(ids_file), "--model", str(tokenizer_dir),
                 "--out", str(tmp_path / "d.png")]) == 0  # fmt: skip
    for i in range(2):
        decoded = Image.open(tmp_path / f"d_{i}.png")
        assert decoded.size == (32, 32)
        with torch.no_grad():
            expected = model.detokenize(ids[i : i + 1]).clamp(-1, 1)
        got = torch.from_numpy(np.asarray(decoded, dtype=np.float32)).permute(2, 0, 1)
        assert (got / 127.5 - 1 - expected[0]).abs().max() < 1 / 127.5 + 1e-6
    # one image from a bare list of ids
    one = ",".join(str(x) for x in ids[0].tolist())
    assert (
        main(["decode", one, "--model", str(tokenizer_dir), "--out", str(tmp_path / "o.png")]) == 0
    )
    assert Image.open(tmp_path / "o.png").size == (32, 32)


def test_reconstruct_writes_side_by_side_and_psnr(tmp_path, tokenizer_dir, photos, capsys):
    out = tmp_path / "r.png"
    assert main(["reconstruct", photos[0], "--model", str(tokenizer_dir), "--out", str(out)]) == 0
    assert "PSNR" in capsys.readouterr().out
    assert Image.open(out).size[1] > Image.open(out).size[0]  # two rows, one column


@pytest.mark.parametrize(
    "ids, message",
    [("1,2,3", "3 ids, this tokenizer reads exactly 36"),
     (",".join(["40"] * 36), r"out of range \[0, 32\)"),
     ("[[1, 2.5]]", "every id must be an integer"),
     ("not ids", "not a file, JSON, or a list of integers")],
)  # fmt: skip
def test_decode_rejects_bad_ids(tmp_path, tokenizer_dir, ids, message, capsys):
    assert (
        main(["decode", ids, "--model", str(tokenizer_dir), "--out", str(tmp_path / "x.png")]) == 2
    )
    err = capsys.readouterr().err
    assert "svq decode: error:" in err
    assert re.search(message, err), err
    assert not (tmp_path / "x.png").exists()


def test_bad_inputs_are_clear_errors(tmp_path, tokenizer_dir, photos, capsys):
    assert main(["encode", photos[0], "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert main(["encode", str(broken), "--model", str(tokenizer_dir)]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["encode", str(tmp_path / "missing.png"), "--model", str(tokenizer_dir)]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err
    stage1 = tmp_path / "stage1"
    StyledVAEVQ(SVQConfig.from_preset("tiny")).save_pretrained(stage1)
    assert main(["encode", photos[0], "--model", str(stage1)]) == 2
    assert "has no codebook" in capsys.readouterr().err
    # without a codebook, reconstruct works through the continuous features
    assert main(["reconstruct", photos[0], "--model", str(stage1), "--continuous",
                 "--out", str(tmp_path / "c.png")]) == 0  # fmt: skip


def test_parse_message_finds_image_paths(photos, tmp_path):
    message = parse_message(f"Look at {photos[0]} where was I?")
    assert message["content"] == [
        {"type": "image", "path": photos[0]},
        {"type": "text", "text": "Look at where was I?"},
    ]
    with pytest.raises(FileNotFoundError, match=r"gone\.png does not exist"):
        parse_message(f"see {tmp_path / 'gone.png'}")


def test_chat_loop_replies_saves_pictures_and_handles_errors(tmp_path, photos):
    chat = build_chat()
    lines = [f"What about Huangshan in winter? {photos[0]}", f"{tmp_path / 'no.png'}",
             "/reset", "hello", "/quit", "never read"]  # fmt: skip
    stdout = io.StringIO()
    replies = converse(chat, io.StringIO("\n".join(lines) + "\n"), stdout, tmp_path / "pics",
                       system="You are Lin.", max_new_tokens=40)  # fmt: skip
    text = stdout.getvalue()
    assert replies == 2 and text.count("assistant>") == 2
    assert "error: image" in text and "(new conversation)" in text
    for line in text.splitlines():  # every picture it names was written
        if "[picture:" in line:
            path, view = line.split("[picture: ")[1].rstrip("]").split("; view: ")
            assert Image.open(path).size == (32, 32) and Image.open(view).size == (128, 128)


class OnePictureChat:
    """Stands in for SVQChat: every reply is a word and one 32 x 32 picture."""

    def __init__(self, picture: Image.Image):
        self.picture = picture

    def chat(self, messages, **generate):
        parts = [{"type": "text", "text": "here"}, {"type": "image", "image": self.picture}]
        return {"role": "assistant", "content": parts}


def test_chat_loop_saves_each_picture_as_written_and_a_128px_nearest_view(tmp_path):
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
    stdout = io.StringIO()
    assert converse(OnePictureChat(picture), io.StringIO("draw\n"), stdout, tmp_path,
                    system=None) == 1  # fmt: skip
    line = next(x for x in stdout.getvalue().splitlines() if "[picture:" in x)
    path, view = line.split("[picture: ")[1].rstrip("]").split("; view: ")
    written, shown = np.asarray(Image.open(path)), np.asarray(Image.open(view))
    assert np.array_equal(written, np.asarray(picture)) and shown.shape == (128, 128, 3)
    assert np.array_equal(shown, written.repeat(4, axis=0).repeat(4, axis=1))  # nearest, x4


def test_upscale_nearest_factors():
    assert upscale_nearest(Image.new("RGB", (64, 64))).size == (128, 128)
    assert upscale_nearest(Image.new("RGB", (48, 32))).size == (192, 128)
    big = Image.new("RGB", (256, 256))
    assert upscale_nearest(big) is big


def test_chat_command_reads_a_saved_model(tmp_path, monkeypatch, capsys):
    build_chat().save_pretrained(tmp_path / "chat")
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["chat", "--model", str(tmp_path / "chat"), "--out", str(tmp_path / "p"),
                 "--max-new-tokens", "8"]) == 0  # fmt: skip
    assert capsys.readouterr().out.count("assistant>") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["chat", "--model", str(tmp_path / "chat"), "--out", str(tmp_path / "p"),
                 "--max-new-tokens", "8", "--image-temperature", "0.7"]) == 0  # fmt: skip
    assert capsys.readouterr().out.count("assistant>") == 1
    with pytest.raises(SystemExit, match="not both"):
        main(["chat", "--model", str(tmp_path / "chat"), "--temperature", "1",
              "--image-temperature", "1"])  # fmt: skip
    assert main(["chat", "--model", str(tmp_path / "none")]) == 2
    assert "none does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["chat", "--model", str(tmp_path / "empty")]) == 2
    assert "not a saved SVQChat" in capsys.readouterr().err


def test_chat_command_pins_the_reference_pictures_tokens(tmp_path, monkeypatch, photos, capsys):
    chat = build_chat()
    chat.save_pretrained(tmp_path / "chat")
    seen = {}
    monkeypatch.setattr("svq.commands.chat.converse", lambda *a, **kw: seen.update(kw))
    model = ["chat", "--model", str(tmp_path / "chat")]
    assert main([*model, "--reference", photos[0], "--pin-tokens", "6", "12"]) == 0
    assert "image_guidance" not in seen  # the model's own scale
    (pins,) = seen["pinned_ids"]
    ids = chat.image_ids(photos[0])
    assert torch.equal(pins[6:12], ids[6:12]) and pins[:6].eq(-1).all() and pins[12:].eq(-1).all()
    assert main([*model, "--image-guidance", "3"]) == 0 and seen["image_guidance"] == 3.0
    with pytest.raises(SystemExit, match="must be > 0"):
        main([*model, "--image-guidance", "0"])
    with pytest.raises(SystemExit, match="go together"):
        main([*model, "--reference", photos[0]])
    assert main([*model, "--reference", str(tmp_path / "gone.png"), "--pin-tokens", "6", "12"]) == 2
    assert "gone.png" in capsys.readouterr().err


def test_train_command_runs_a_stage(tmp_path, capsys):
    out = tmp_path / "s1"
    assert main(["train", "stage1", "svq/configs/stage1_tiny.yaml", "--output_dir", str(out),
                 "--max_steps", "1", "--save_steps", "1"]) == 0  # fmt: skip
    assert "done; release folder" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert StyledVAEVQ.from_pretrained(out / "model").config.image_size == 32


def test_train_command_help_and_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "vq", "--help"])
    assert exit_info.value.code == 0
    assert "usage: svq train vq" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's own error for an unknown stage
        main(["train", "stage9", "x.yaml"])
    assert "invalid choice: 'stage9'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    assert main(["train", "stage1", str(bad), "--output_dir", str(tmp_path / "o")]) == 2
    assert "unknown options ['max_stepz']" in capsys.readouterr().err
