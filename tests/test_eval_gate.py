"""svq/eval/gate.py and the shipped judge: the judge the repository ships still reads fresh clean
renders (this catches renderer drift), and the gate refuses an under-trained judge."""

import json

import pytest

from svq.data import ATTRIBUTES
from svq.eval.gate import START, THRESHOLD, judge_gate
from svq.eval.judge import load_judge, shipped_judge
from svq.train.judge import train


@pytest.mark.parametrize("size", [32, 64])
def test_the_shipped_judge_passes_its_gate_on_fresh_renders(size):
    judge = load_judge(shipped_judge(size))
    gate = judge_gate(judge, size, n_images=512)
    assert gate.passed, gate.reason
    assert set(gate.accuracy) == set(ATTRIBUTES) and min(gate.accuracy.values()) >= THRESHOLD
    assert "passed its gate" in gate.reason


@pytest.mark.parametrize("size", [32, 64])
def test_the_gate_reads_pictures_the_judge_was_not_scored_on(size):
    trained = json.loads((shipped_judge(size) / "run_config.json").read_text())
    assert trained["eval_images"] <= START  # its own tables use pictures 0..eval_images-1
    assert trained["max_minutes"] == 0  # trained by steps, not minutes
    assert trained["image_size"] == 64  # smaller pictures are resized to 64 px (world32: tuned)
    metrics = json.loads((shipped_judge(size) / "metrics.json").read_text())
    assert metrics["steps"] == trained["max_steps"]  # trained to the end
    with pytest.raises(ValueError, match="no shipped judge for 48 px"):
        shipped_judge(48)


def test_the_gate_refuses_an_under_trained_judge(tmp_path):
    folder = train(tmp_path / "judge", preset="tiny", image_size=32, max_steps=3, eval_images=8,
                   dataloader_num_workers=0)  # fmt: skip
    gate = judge_gate(load_judge(folder), 32, n_images=64)
    assert not gate.passed and gate.failing
    assert all(gate.accuracy[name] < THRESHOLD for name in gate.failing)
    assert gate.reason.startswith("judged figures refused") and gate.failing[0] in gate.reason
    assert gate.to_dict()["passed"] is False
    with pytest.raises(ValueError, match="at least 2"):
        judge_gate(load_judge(folder), 32, n_images=1)
