"""Stage 1's auxiliary semantic loss: the read-out, its loss, its options, and a stage-1 run
that uses it and resumes bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from conftest import killed_after_checkpoint
from test_stage1 import options, params, run

from svq.data.schema import SCHEMA
from svq.train import common
from svq.train.attribute_loss import AttributeReadout, attribute_loss

CLASSES = [len(values) for values in SCHEMA.values()]


def test_readout_reads_only_its_prefix_and_the_loss_is_the_mean_cross_entropy():
    torch.manual_seed(0)
    readout = AttributeReadout(6, 16, CLASSES)
    features = torch.randn(5, 36, 16, requires_grad=True)
    labels = torch.stack([torch.randint(0, c, (5,)) for c in CLASSES], dim=1)  # (5, A)
    logits = readout(features)
    assert [tuple(lg.shape) for lg in logits] == [(5, c) for c in CLASSES]
    loss = attribute_loss(logits, labels)
    expected = sum(F.cross_entropy(lg, labels[:, a]) for a, lg in enumerate(logits)) / len(CLASSES)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert features.grad[:, :6].abs().sum() > 0 and not features.grad[:, 6:].any()
    with pytest.raises(ValueError, match="do not match"):
        attribute_loss(logits, labels[:, :3])
    with pytest.raises(ValueError, match="tokens >= 1"):
        AttributeReadout(0, 16, CLASSES)


def test_options_need_the_world_and_enough_tokens(tmp_path):
    with pytest.raises(ValueError, match="needs labelled pictures"):
        options(tmp_path, "--attribute_loss_weight", "0.1", "--train_data", str(tmp_path))
    with pytest.raises(ValueError, match="attribute_loss_weight must be >= 0"):
        options(tmp_path, "--attribute_loss_weight", "-1")
    with pytest.raises(ValueError, match="attribute_loss_tokens 40 > the model's 36 tokens"):
        run(tmp_path / "run", "--attribute_loss_weight", "0.1", "--attribute_loss_tokens", "40")


FLAGS = ("--max_steps", "4", "--save_steps", "2", "--validation_data", "none",
         "--attribute_loss_weight", "0.5", "--attribute_loss_tokens", "12")  # fmt: skip


def test_stage1_with_the_attribute_loss_logs_it_and_resumes_exactly(tmp_path, monkeypatch):
    summary = run(tmp_path / "straight", *FLAGS)
    assert summary["train"]["train/attributes"] > 0
    total = summary["train"]["train/loss"]
    assert total > summary["train"]["train/mse"]  # the term is in the optimised loss
    with killed_after_checkpoint(monkeypatch, 2):
        run(tmp_path / "resumed", *FLAGS)
    run(tmp_path / "resumed", *FLAGS, "--resume")
    a, b = params(tmp_path / "straight" / "model"), params(tmp_path / "resumed" / "model")
    assert a.keys() == b.keys() and not any("heads" in k for k in a)  # the read-out stays out
    assert all(torch.equal(a[k], b[k]) for k in a)  # its state was checkpointed and restored
    assert common.checkpoints(tmp_path / "resumed")[-1][0] == 4
