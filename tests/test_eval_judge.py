"""The attribute judge: shapes, resizing, save/reload, schema checks, and the training script."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import HfArgumentParser

from svq.data import ATTRIBUTES, SCHEMA
from svq.eval.judge import AttributeJudge, JudgeConfig, JudgeOutput, load_judge
from svq.train.judge import JudgeOptions, blur_and_noise, confusion, main


def tiny(**overrides) -> AttributeJudge:
    torch.manual_seed(0)
    return AttributeJudge(JudgeConfig.from_preset("tiny", **overrides)).eval()


def images(batch: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_one_head_per_attribute_in_schema_order():
    judge = tiny()
    out = judge(images(3))
    assert isinstance(out, JudgeOutput)
    assert out.attributes == ATTRIBUTES
    assert [tuple(logit.shape) for logit in out.logits] == [(3, len(v)) for v in SCHEMA.values()]
    assert torch.equal(out["skin_tone"], out.logits[ATTRIBUTES.index("skin_tone")])
    with pytest.raises(KeyError, match="no attribute"):
        out["shoe_size"]
    labels = judge.predict(images(3))
    assert labels.shape == (3, len(ATTRIBUTES)) and labels.dtype == torch.long
    assert torch.equal(labels, out.labels())
    assert set(judge.state_dict()) >= {f"heads.{name}.weight" for name in ATTRIBUTES}


def test_other_sizes_are_resized_to_the_training_size():
    judge = tiny()  # trained size 32
    big = images(3, size=64)
    small = F.interpolate(big, size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(judge(big).logits, judge(small).logits)
    with pytest.raises(ValueError, match=r"\(B, 3, H, H\)"):
        judge.predict(torch.zeros(2, 3, 32, 48))


def test_predict_is_eval_mode_and_restores_training_mode():
    judge = tiny().train()
    stats = judge.trunk[1][1].running_mean.clone()  # the stem's BatchNorm
    x = images(8)
    first = judge.predict(x, batch_size=3)
    assert judge.training
    assert torch.equal(judge.trunk[1][1].running_mean, stats)  # no statistics updated
    assert torch.equal(first, judge.eval().predict(x))  # batch-independent


def test_accuracy_counts_per_attribute():
    judge = tiny()
    x = images(4)
    labels = judge.predict(x)
    torch.testing.assert_close(judge.accuracy(x, labels), torch.ones(len(ATTRIBUTES)))
    skin = ATTRIBUTES.index("skin_tone")
    labels[:2, skin] = (labels[:2, skin] + 1) % len(SCHEMA["skin_tone"])  # two wrong
    acc = judge.accuracy(x, labels)
    assert acc[skin] == 0.5 and (acc.sum() - acc[skin]) == len(ATTRIBUTES) - 1
    assert judge.named(acc)["skin_tone"] == 0.5
    with pytest.raises(ValueError, match="integer labels"):
        judge.accuracy(x, labels[:, :3])


def test_save_reload_same_output_and_schema_checks(tmp_path):
    judge = tiny()
    judge.save_pretrained(tmp_path / "j")
    loaded = load_judge(tmp_path / "j")
    assert loaded.config == judge.config
    assert loaded.attributes == ATTRIBUTES  # config.json's sorted keys do not reorder the heads
    assert list(loaded.heads) == list(ATTRIBUTES)
    assert not loaded.training
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(judge(x).logits, loaded(x).logits, rtol=0, atol=0)
    # A judge trained on another schema refuses to score today's labels.
    values = [["none", "cap"] if v == list(SCHEMA["hat"]) else v for v in judge.config.values]
    with pytest.raises(ValueError, match=r"differs in \['hat'\]"):
        AttributeJudge(JudgeConfig.from_preset("tiny", values=values)).check_schema()
    reordered = dict(reversed(list(SCHEMA.items())))
    with pytest.raises(ValueError, match="different order"):
        judge.check_schema(reordered)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_size": 36}, "not divisible"),
        ({"widths": []}, "widths"),
        ({"attributes": ["hat"], "values": [["cap", "cap"]]}, "distinct"),
        ({"attributes": ["hat", "glasses"], "values": [["cap", "beanie"]]}, "value lists"),
        ({"dropout": 1.0}, "dropout"),
        ({"model_type": "svq"}, "model_type"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        JudgeConfig.from_preset("tiny", **overrides)


def test_augmentation_keeps_range_and_leaves_unchosen_pictures():
    x = images(64)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(blur_and_noise(x, 0.0, g), x)
    y = blur_and_noise(x, 0.5, g)
    changed = (y != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54  # about half the pictures
    assert y.min() >= -1 and y.max() <= 1
    # A blur keeps colours: the mean of each picture barely moves.
    assert (y.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs().max() < 0.05


def test_confusion_rows_are_true_values():
    pred, labels = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    assert confusion(pred, labels, 3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_training_script_learns_and_writes_a_loadable_judge(tmp_path):
    # Options come through HfArgumentParser, as on the command line.
    (args,) = HfArgumentParser(JudgeOptions).parse_args_into_dataclasses(
        args=[
            "--output_dir", str(tmp_path / "judge"), "--preset", "tiny", "--image_size", "32",
            "--max_steps", "40", "--per_device_train_batch_size", "32", "--learning_rate", "5e-3",
            "--warmup_steps", "5", "--eval_images", "64", "--eval_steps", "20",
            "--dataloader_num_workers", "0", "--bf16", "false", "--augment", "0.3",
        ]
    )  # fmt: skip
    metrics = main(args)
    out = tmp_path / "judge"
    for name in ("config.json", "model.safetensors", "run_config.json", "metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run_config.json").read_text())["max_steps"] == 40
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 40 and saved["images_seen"] == 40 * 32
    assert list(saved["splits"]) == [
        "validation",
        "heldout",
        "validation, blur 1px",
        "validation, rendered at 16px",
    ]
    validation = saved["splits"]["validation"]
    assert list(validation) == list(ATTRIBUTES)
    for name, values in SCHEMA.items():
        matrix = torch.tensor(validation[name]["confusion"])
        assert matrix.shape == (len(values), len(values)) and matrix.sum() == 64
        assert validation[name]["accuracy"] == pytest.approx(matrix.trace().item() / 64)
    # 1,280 pictures are enough to read the sky: time of day well above chance (1/3).
    assert metrics["splits"]["validation"]["time_of_day"]["accuracy"] > 0.6
    judge = load_judge(out)
    assert judge.config.image_size == 32
    # a fine-tune starts from those weights, at half size too; another config is refused
    again = JudgeOptions(
        output_dir=str(tmp_path / "tuned"), preset="tiny", image_size=32, max_steps=2,
        per_device_train_batch_size=8, learning_rate=1e-9, warmup_steps=1, eval_images=8,
        dataloader_num_workers=0, augment=0.0,
        half_size=1.0, init_from=str(out),
    )  # fmt: skip
    main(again)
    tuned = load_judge(tmp_path / "tuned")
    for a, b in zip(judge.parameters(), tuned.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)  # lr ~0: the weights it started from
    other = JudgeOptions(**{**vars(again), "image_size": 64, "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="judge of another config"):
        main(other)
