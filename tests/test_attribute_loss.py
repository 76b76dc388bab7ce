"""Stage 1's auxiliary semantic loss: the read-out, its loss, its options, and a stage-1 run
that uses it and resumes bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from conftest import killed_after_checkpoint
from test_stage1 import options, params, run

from svq.data.schema import IDENTITY_ATTRIBUTES, SCHEMA
from svq.train import common
from svq.train.attribute_loss import (
    AttributeReadout,
    attribute_loss,
    attribute_spans,
    swap_identity,
)

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


def test_identity_tokens_give_the_person_a_group_of_its_own():
    """attribute_spans(6, 4): scene attributes read tokens 0-5, identity attributes 6-9; the
    gradient of an identity head reaches only tokens 6-9, a scene head's only 0-5."""
    spans = attribute_spans(6, 4)
    assert spans == [(6, 10) if a in IDENTITY_ATTRIBUTES else (0, 6) for a in SCHEMA]
    assert attribute_spans(6) == [(0, 6)] * len(SCHEMA)
    torch.manual_seed(0)
    readout = AttributeReadout(6, 16, CLASSES, spans)
    assert readout.tokens == 10
    for a, name in enumerate(SCHEMA):
        features = torch.randn(3, 36, 16, requires_grad=True)
        readout(features)[a].sum().backward()
        touched = features.grad.abs().sum((0, 2)).nonzero().flatten().tolist()
        assert touched == (list(range(6, 10)) if name in IDENTITY_ATTRIBUTES else list(range(6)))
    with pytest.raises(ValueError, match="needs 10 tokens"):
        readout(torch.randn(2, 8, 16))
    with pytest.raises(ValueError, match="one token range"):
        AttributeReadout(6, 16, CLASSES, spans[:-1])
    with pytest.raises(ValueError, match="identity_tokens >= 0"):
        attribute_spans(6, -1)


def test_swap_identity_gives_the_donors_person_tokens_and_labels():
    features = torch.arange(4.0).view(4, 1, 1).expand(4, 36, 2)  # picture i: every value i
    labels = torch.arange(4).view(4, 1).expand(4, len(SCHEMA))
    mixed, mixed_labels = swap_identity(features, labels, (6, 12), count=3)
    assert mixed.shape == (3, 36, 2) and mixed_labels.shape == (3, len(SCHEMA))
    donors = [3, 0, 1]  # the picture before each, cyclically
    for i, donor in enumerate(donors):
        assert mixed[i, 6:12].eq(donor).all()
        assert mixed[i, :6].eq(i).all() and mixed[i, 12:].eq(i).all()
        for a, name in enumerate(SCHEMA):
            assert mixed_labels[i, a] == (donor if name in IDENTITY_ATTRIBUTES else i)
    with pytest.raises(ValueError, match="count"):
        swap_identity(features, labels, (6, 12), count=5)


def test_options_need_the_world_and_enough_tokens(tmp_path):
    with pytest.raises(ValueError, match="needs labelled pictures"):
        options(tmp_path, "--attribute_loss_weight", "0.1", "--train_data", str(tmp_path))
    with pytest.raises(ValueError, match="attribute_loss_weight must be >= 0"):
        options(tmp_path, "--attribute_loss_weight", "-1")
    with pytest.raises(ValueError, match="attribute_identity_tokens = 40 > the model's 36 tokens"):
        run(tmp_path / "run", "--attribute_loss_weight", "0.1", "--attribute_loss_tokens", "40")
    with pytest.raises(ValueError, match="attribute_identity_tokens = 40 > the model's 36 tokens"):
        run(tmp_path / "run2", "--attribute_loss_weight", "0.1", "--attribute_identity_tokens",
            "34")  # fmt: skip
    with pytest.raises(ValueError, match="attribute_identity_tokens must be >= 0"):
        options(tmp_path, "--attribute_identity_tokens", "-2")
    with pytest.raises(ValueError, match="attribute_identity_tokens needs the attribute loss"):
        options(tmp_path, "--attribute_identity_tokens", "6")
    with pytest.raises(ValueError, match="needs attribute_identity_tokens"):
        options(tmp_path, "--attribute_loss_weight", "0.1", "--attribute_swap_images", "4")
    swap = ("--attribute_loss_weight", "0.1", "--attribute_identity_tokens", "6")
    with pytest.raises(ValueError, match="needs a batch of >= 2"):
        options(tmp_path, *swap, "--attribute_swap_images", "1",
                "--per_device_train_batch_size", "1")  # fmt: skip
    with pytest.raises(ValueError, match="needs a batch of >= 2"):
        options(tmp_path, *swap, "--attribute_swap_images", "9",
                "--per_device_train_batch_size", "8")  # fmt: skip
    with pytest.raises(ValueError, match="attribute_swap_images must be >= 0"):
        options(tmp_path, "--attribute_swap_images", "-1")


FLAGS = ("--max_steps", "4", "--save_steps", "2", "--validation_data", "none",
         "--attribute_loss_weight", "0.5", "--attribute_loss_tokens", "12",
         "--attribute_identity_tokens", "6")  # fmt: skip


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


def test_stage1_with_swapped_person_tokens_optimises_the_swap_term(tmp_path):
    summary = run(tmp_path / "swap", *FLAGS, "--attribute_swap_images", "2")
    train = summary["train"]
    assert train["train/swap"] > 0
    assert train["train/loss"] > train["train/mse"] + 0.5 * train["train/swap"]  # both terms in
