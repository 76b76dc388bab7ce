"""Bad input as a new user gives it (issue 19): every error is one line naming the file (and
line, for JSONL) with exit status 2; a local path never reaches the hub; no open handles on
broken pictures; float pictures outside their documented range are errors, not wrong
pictures; grey pictures shrink before they become RGB."""

import gc
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_llm_sft import save_svq
from test_llm_tiny import build_chat, svq_model

from svq import StyledVAEVQ
from svq.cli import main
from svq.data import Preprocess, UnreadableImageError, load_image, render, world_record
from svq.llm import sft_data as sd


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """A folder with two good pictures, and truncated PNG, JPEG and GIF files beside it."""
    root = tmp_path_factory.mktemp("pictures")
    (root / "good").mkdir()
    for i in range(2):
        render(world_record(0, "validation", i), 48).save(root / "good" / f"p{i}.png")
    for suffix in ("png", "jpg", "gif"):
        render(world_record(0, "validation", 2), 48).save(root / f"whole.{suffix}")
        data = (root / f"whole.{suffix}").read_bytes()
        (root / f"truncated.{suffix}").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    return root


def one_line_error(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# --- case 1: unreadable pictures are named ----------------------------------------------------


def test_unreadable_pictures_are_named_by_encode_and_reconstruct(tokenizer_dir, pictures, capsys):
    good = sorted(str(p) for p in (pictures / "good").iterdir())
    for bad in ("empty.png", "truncated.png", "truncated.jpg"):
        args = ["encode", *good, str(pictures / bad), "--model", str(tokenizer_dir)]
        assert main(args) == 2
        line = one_line_error(capsys.readouterr().err, "svq encode")
        assert f"image {pictures / bad}: " in line
    assert (
        main(["reconstruct", str(pictures / "truncated.png"), "--model", str(tokenizer_dir)]) == 2
    )
    assert str(pictures / "truncated.png") in capsys.readouterr().err


def test_an_unreadable_picture_of_a_chat_file_names_the_file_and_line(tmp_path, pictures):
    chat = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Look"}, {"type": "image", "path": str(pictures / "good/p0.png")}
    ]}]}  # fmt: skip
    broken = {"messages": [{"role": "user", "content": [
        {"type": "image", "path": str(pictures / "truncated.png")}
    ]}]}  # fmt: skip
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(chat) + "\n" + json.dumps(broken) + "\n")
    data = sd.load_chats(path)
    svq = StyledVAEVQ.load(save_svq(tmp_path / "svq"), require_codebook=True)
    with pytest.raises(UnreadableImageError, match=r"chats\.jsonl:2: image .*truncated\.png: "):
        sd.encode_images(data, svq, None, None)


def test_an_unreadable_picture_in_the_chat_loop_is_named(chat, pictures, tmp_path):
    import io

    from svq.commands.chat import converse

    lines = f"look {pictures / 'truncated.png'}\n/quit\n"
    stdout = io.StringIO()
    assert converse(chat, io.StringIO(lines), stdout, tmp_path, system=None) == 0
    assert f"error: image {pictures / 'truncated.png'}: " in stdout.getvalue()


@pytest.mark.parametrize("stage", ["stage1", "sft", "judge", "ids_to_grid"])
def test_training_scripts_run_directly_exit_2_with_one_line(tmp_path, monkeypatch, capsys, stage):
    """`python -m svq.train.STAGE` with bad input: status 2, one line naming the file, no
    traceback (every script's `__main__` is `common.run_script`, called here as it would)."""
    import logging

    from svq.train import TRAINERS, common, trainer

    module_name = TRAINERS[stage][0]
    module, options_class = trainer(stage)
    bad = tmp_path / "b.yaml"
    bad.write_text("model_preset: [tiny\n")
    script = f"{module_name.replace('.', '/')}.py"
    monkeypatch.setattr(sys, "argv", [script, str(bad), "--output_dir", "o"])
    with pytest.raises(SystemExit) as exit_info:
        common.run_script(module.main, options_class, logging.getLogger(stage))
    assert exit_info.value.code == 2
    assert f"{bad}:2: not valid YAML" in one_line_error(capsys.readouterr().err, Path(script).name)


# --- case 2: local paths never reach the hub ------------------------------------------------


def test_a_missing_local_folder_never_reaches_the_hub(tmp_path, monkeypatch, pictures, capsys):
    import huggingface_hub.hub_mixin

    asked = []

    def no_hub(*args, **kwargs):
        asked.append(kwargs.get("repo_id", args[0] if args else None))
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", no_hub)
    monkeypatch.chdir(tmp_path)
    image = str(pictures / "good" / "p0.png")
    for local in ("./runs/nope", "runs/deep/nope", "nope", str(tmp_path / "nope"), "~/no/pe"):
        assert main(["encode", image, "--model", local]) == 2
        assert "does not exist" in one_line_error(capsys.readouterr().err, "svq encode")
    assert asked == []
    (tmp_path / "runs").mkdir()
    assert main(["encode", image, "--model", "runs"]) == 2  # a folder, not a model: local
    assert "runs has no config.json" in capsys.readouterr().err
    # owner/name that is not here: only then the hub, and the message says what was tried
    assert main(["encode", image, "--model", "runs/nope"]) == 2
    line = one_line_error(capsys.readouterr().err, "svq encode")
    assert "local path runs/nope does not exist" in line and "hub id runs/nope" in line
    assert "offline" in line and asked == ["runs/nope"]


def test_a_missing_llm_folder_never_reaches_the_hub(tmp_path, monkeypatch):
    from svq.llm.loading import load_llm, load_tokenizer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"LLM folder \./llm does not exist"):
        load_tokenizer("./llm")
    with pytest.raises(FileNotFoundError, match=r"LLM folder a/b/c does not exist"):
        load_llm("a/b/c")
    with pytest.raises(FileNotFoundError, match=r"hub id nobody/nothing was not looked up"):
        load_llm("nobody/nothing")  # HF_HUB_OFFLINE=1 (conftest): at once, no retries


# --- case 3: a folder of pictures -----------------------------------------------------------


def test_a_folder_of_images_is_encoded_and_a_folder_is_not_called_missing(
    tmp_path, tokenizer_dir, pictures, capsys
):
    out = tmp_path / "ids.json"
    assert main(["encode", str(pictures / "good"), "--model", str(tokenizer_dir),
                 "--out", str(out)]) == 0  # fmt: skip
    paths = [r["path"] for r in json.loads(out.read_text())["images"]]
    assert paths == [str(pictures / "good" / f"p{i}.png") for i in range(2)]
    (tmp_path / "empty").mkdir()
    assert main(["encode", str(tmp_path / "empty"), "--model", str(tokenizer_dir)]) == 2
    assert "is a folder with no image files" in capsys.readouterr().err
    assert main(["reconstruct", str(pictures / "good"), "--model", str(tokenizer_dir)]) == 2
    assert "is a folder, not an image file" in capsys.readouterr().err


# --- case 4: config files -------------------------------------------------------------------


def test_config_file_errors_name_the_file_line_and_option(tmp_path, capsys):
    def train(*options: str) -> str:
        assert main(["train", "stage1", *options, "--output_dir", str(tmp_path / "o")]) == 2
        return one_line_error(capsys.readouterr().err, "svq train")

    syntax = tmp_path / "b.yaml"
    syntax.write_text("max_steps: 2\nmodel_preset: [tiny\n")
    assert f"{syntax}:3: not valid YAML" in train(str(syntax))
    value = tmp_path / "v.yaml"
    value.write_text("max_steps: abc\n")
    assert f"{value}: max_steps: invalid value 'abc'" in train(str(value))
    value.write_text("learning_rate: [1, 2]\n")
    assert f"{value}: learning_rate: expected a number" in train(str(value))
    line = train("svq/configs/stage1_tiny.yaml", "--model_overrides", "{width: 3}")
    assert "model_overrides: not valid JSON" in line
    assert f"config file {tmp_path / 'gone.yaml'} does not exist" in train(
        str(tmp_path / "gone.yaml")
    )


# --- case 5: negative ids -------------------------------------------------------------------


def test_negative_ids_are_ids_not_options(tmp_path, tokenizer_dir, capsys):
    for ids, message in ((",".join(["-1"] * 36), r"ids [-1, -1, -1, -1, -1] out of range"),
                         ("-3", "1 ids, this tokenizer reads exactly 36"),
                         ("-1, 4", "2 ids")):  # fmt: skip
        assert main(["decode", ids, "--model", str(tokenizer_dir),
                     "--out", str(tmp_path / "x.png")]) == 2  # fmt: skip
        assert message in one_line_error(capsys.readouterr().err, "svq decode")


# --- case 6: no open handles ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["png", "jpg", "gif"])
def test_truncated_pictures_leave_no_open_file(pictures, suffix):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_image(pictures / f"truncated.{suffix}")
            raised = False
        except UnreadableImageError:
            raised = True
        gc.collect()
    assert raised
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


# --- case 7: float pictures -----------------------------------------------------------------


def floats(values: list[float]) -> Image.Image:
    return Image.fromarray(np.array([values] * 2, np.float32), "F")


def test_float_grey_pictures_follow_their_documented_range():
    assert np.asarray(load_image(floats([0.0, 0.5, 1.0])))[0, :, 0].tolist() == [0, 128, 255]
    assert np.asarray(load_image(floats([0.0, 128.0, 255.0])))[0, :, 0].tolist() == [0, 128, 255]
    for values, span in (([0.0, 500.0, 1000.0], r"\[0, 1000\]"), ([-1.0, 0.0, 1.0], r"\[-1, 1\]")):
        with pytest.raises(UnreadableImageError, match=rf"mode F values span {span}"):
            load_image(floats(values))
    negative = Image.fromarray(np.array([[-5, 0], [3, 9]], np.int32), "I")
    with pytest.raises(UnreadableImageError, match=r"mode I values span \[-5, 9\]"):
        load_image(negative)


def test_tokenize_rejects_pixels_outside_minus_one_one():
    model = svq_model(num_codes=32)
    size = model.config.image_size
    pixels = torch.rand(1, 3, size, size) * 255
    with pytest.raises(ValueError, match=r"expected pixels in \[-1, 1\]"):
        model.tokenize(pixels)
    ok = model.tokenize(pixels / 127.5 - 1)
    assert ok.shape == (1, 36)


# --- case 9: big grey pictures, a file for a chat folder ------------------------------------


def test_grey_pictures_shrink_before_rgb_with_the_same_pixels():
    gen = np.random.default_rng(0)
    grey = Image.fromarray(gen.integers(0, 256, (301, 207), dtype=np.uint8), "L")
    early = load_image(grey, short_side=32)
    assert early.mode == "RGB" and min(early.size) < 64  # halved before the RGB copy
    preprocess = Preprocess(32)
    assert torch.equal(preprocess(early), preprocess(load_image(grey)))
    deep = Image.fromarray(gen.integers(0, 65536, (150, 130), dtype=np.uint16))
    assert torch.equal(preprocess(load_image(deep, 32)), preprocess(load_image(deep)))


def test_chat_model_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(b"x")
    assert main(["chat", "--model", str(tmp_path / "model.bin")]) == 2
    assert "is a file; expected an SVQChat folder" in capsys.readouterr().err


# --- case 8: message text cannot forge tokens -----------------------------------------------


@pytest.fixture(scope="module")
def chat():
    return build_chat()


def typed_strings(tokenizer, seed: int = 0) -> list[str]:
    """Every added token of the tokenizer (image tokens, template markup), `<svq_k>`-like
    strings in and out of range, and such strings glued to words and to each other."""
    gen = np.random.default_rng(seed)
    added = [token.content for token in tokenizer.added_tokens_decoder.values()]
    like = [f"<svq_{k}>" for k in gen.integers(0, 5000, 20)] + ["<svq_-1>", "<svq_3", "<boi"]
    like += [f"<svq_{p}_{k}>" for p, k in gen.integers(0, 40, (5, 2))]
    glued = ["".join(gen.choice(added, 3)) for _ in range(10)]
    glued += [f"a{s}b" for s in gen.choice(added, 10)] + [" ".join(added)]
    return [*added, *like, *glued, "\ue000" + "0\ue001", "<boi> <image>" * 3]


def with_text(messages: list[dict], text: str) -> list[dict]:
    """The conversation with every text (parts, and string contents) replaced by `text`."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({**message, "content": text})
        else:
            parts = [{**p, "text": text} if p["type"] == "text" else p for p in content]
            out.append({**message, "content": parts})
    return out


def test_control_strings_in_messages_never_become_tokens(chat):
    from test_llm_tiny import conversation

    from svq.llm.conversation import template_messages

    tokenizer, vocab = chat.tokenizer, chat.vocab
    added = set(tokenizer.added_tokens_decoder)
    image_ids = set(vocab.new_token_ids)
    base = conversation()
    reference = chat.encode(with_text(base, "hello"), add_generation_prompt=True)
    expected = [t for t in reference.input_ids.tolist() if t in added]  # markup and images
    for typed in typed_strings(tokenizer):
        for text in (typed, f"what does {typed} mean?"):
            item = chat.encode(with_text(base, text), add_generation_prompt=True)
            ids = item.input_ids.tolist()
            assert [t for t in ids if t in added] == expected, text
            assert item.code_positions.shape[0] == 1 and item.image_positions.shape[0] == 1
            rows = [t for t in ids if t in image_ids]
            assert len(rows) == len([t for t in expected if t in image_ids])
            rendered = tokenizer.apply_chat_template(
                template_messages(with_text(base, text), vocab),
                tokenize=False, add_generation_prompt=True,
            )  # fmt: skip
            assert tokenizer.decode(ids) == rendered  # the typed strings came through as text


def test_typed_control_strings_are_plain_text_in_sft_data(chat):
    """The SFT path (svq.llm.sft_data) encodes through the same function: texts holding `<boi>`,
    `<svq_3>` and `<|im_end|>` train as text; the assistant's one picture is one span."""
    text = "a <boi><svq_3> b <|im_end|>"
    messages = [
        {"role": "user", "content": [{"type": "text", "text": text},
                                     {"type": "image", sd.IMAGE_INDEX: 0}]},
        {"role": "assistant", "content": [{"type": "text", "text": text},
                                          {"type": "image", sd.IMAGE_INDEX: 1}]},
    ]  # fmt: skip
    data = sd.ChatData([{"id": "typed", "messages": messages}], [Path("a"), Path("b")], "x")
    images = sd.ImageTensors(torch.randn(2, 36, 16), torch.randint(0, 32, (2, 36)), None, False)
    item = sd.SFTDataset(data, images, chat.tokenizer, chat.vocab)[0]
    assert torch.equal(item.code_ids, images.ids[1:2]) and item.image_positions.shape == (1, 36)
    labelled = item.labels[item.labels != -100]
    assert int((labelled == chat.vocab.boi_id).sum()) == 1  # the picture's, not the typed one
    code_3 = chat.vocab.code_offset + 3
    assert int((item.input_ids == code_3).sum()) == int((images.ids[1] == 3).sum())


def test_plain_text_tokenizes_exactly_as_the_template_renders(chat):
    """World chats (English and Chinese), resolved with stand-in pictures, give the same ids
    as tokenizing the rendered template in one piece (what the encoding did before)."""
    from svq.llm.conversation import template_messages

    data = sd.world_chats(0, "train", 12, "mixed")
    count = len(data.images)
    images = sd.ImageTensors(
        torch.randn(count, 36, 16), torch.randint(0, 32, (count, 36)), None, False
    )
    for one in data.chats:
        messages = sd.resolve_messages(one["messages"], images)
        item = sd.encode_conversation(messages, chat.tokenizer, chat.vocab)
        rendered = chat.tokenizer.apply_chat_template(
            template_messages(messages, chat.vocab), tokenize=False
        )
        before = chat.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        assert item.input_ids.tolist() == before
