"""svq.train.loop: the one loop the stages share, on a toy regression: the hooks run in their
order, accumulation makes one optimiser step of several micro-batches, logs / validation /
checkpoints land on their steps, and a non-finite loss stops the run naming the step."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest
import torch

from svq.train import common
from svq.train.loop import Stage, train_loop
from svq.train.options import EvalOptions, LoggingOptions, OptimizerOptions, RunOptions


@dataclass
class ToyOptions(EvalOptions, LoggingOptions, OptimizerOptions, RunOptions):
    report_to: str = "none"


def run(tmp_path, loss_scale=1.0, **options):
    o = ToyOptions(output_dir=str(tmp_path), **options)
    accelerator = common.make_accelerator(o)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=o.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler, _ = common.make_scheduler(accelerator, o, optimizer, 4)
    x = torch.randn(16, 3)
    batches = itertools.repeat((x, x @ torch.tensor([[1.0], [-2.0], [0.5]])))  # one batch
    events = []

    def loss(batch, step):
        inputs, targets = batch
        mse = ((model(inputs) - targets) ** 2).mean() * loss_scale
        events.append(("loss", step, mse.item()))
        return {"loss": mse, "mse": mse.detach()}

    def validate(step, final):
        events.append(("validate", step))
        return {"step": step, "final": final} if final else None

    stage = Stage(
        loss=loss,
        before_step=lambda step: events.append(("before", step)),
        after_micro=lambda batch, terms, step: events.append(("micro", step)),
        after_step=lambda step: events.append(("after", step)),
        logs=lambda: {"extra": 7.0},
        validate=validate,
    )
    state = {"step": 0, "images_seen": 0, "train_seconds": 0.0}
    result = train_loop(accelerator, o, stage, model=model, optimizer=optimizer,
                        scheduler=scheduler, batches=batches, state=state, max_steps=4,
                        global_batch=16 * o.gradient_accumulation_steps)  # fmt: skip
    return result, state, events, o


def test_hooks_logs_validation_and_checkpoints(tmp_path):
    result, state, events, _ = run(tmp_path, gradient_accumulation_steps=2, logging_steps=3,
                                   save_steps=2, save_total_limit=5)  # fmt: skip
    first = [e[:2] for e in events if e[1] == 1]
    assert first == [("before", 1), ("loss", 1), ("micro", 1), ("loss", 1), ("micro", 1),
                     ("after", 1), ("validate", 1)]  # fmt: skip
    assert state["step"] == 4 and state["images_seen"] == 4 * 32
    assert result.record == {"step": 4, "final": True}
    lines = (tmp_path / "validation.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [4]  # only the final one validated
    assert set(result.logs) == {"train/loss", "train/mse", "train/lr", "train/img_per_s",
                                "train/extra", "train/grad_norm"}  # fmt: skip
    assert result.logs["train/extra"] == 7.0
    assert [step for step, _ in common.checkpoints(tmp_path)] == [2, 4]


def test_the_loss_goes_down_and_a_zero_rate_keeps_it(tmp_path):
    def losses(**options):
        _, _, events, _ = run(tmp_path / str(len(options)), **options)
        return [e[2] for e in events if e[0] == "loss"]

    moving = losses(learning_rate=0.2)
    assert all(b < a for a, b in itertools.pairwise(moving)) and moving[-1] < 0.8 * moving[0]
    still = losses(learning_rate=0.0, logging_steps=1)
    # the same data in the same order; nothing moves without a learning rate
    assert still == pytest.approx([moving[0]] * len(still))


def test_a_non_finite_loss_stops_the_run(tmp_path):
    with pytest.raises(common.NonFiniteLossError, match="step 1"):
        run(tmp_path, loss_scale=float("nan"))


def test_stages_in_one_process_take_their_own_precision(tmp_path, monkeypatch):
    """`svq demo` runs stages one after another in one process: a bf16 stage after an fp32 one
    (and back) gets the precision it asked for, not an error (on a CPU that computes bf16)."""
    monkeypatch.setattr(common, "native_cpu_bf16", lambda: True)
    for bf16 in (False, True, False):
        accelerator = common.make_accelerator(ToyOptions(output_dir=str(tmp_path), bf16=bf16))
        assert accelerator.mixed_precision == ("bf16" if bf16 else "no")
        model = accelerator.prepare(torch.nn.Linear(3, 1))
        dtype = model(torch.randn(2, 3)).dtype  # autocast inside, outputs converted to fp32
        assert dtype == torch.float32
        with accelerator.autocast():
            inner = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(1, 3)).dtype
        assert inner == (torch.bfloat16 if bf16 else torch.float32)


def test_bf16_on_a_cpu_without_it_trains_in_fp32_and_says_so(tmp_path, monkeypatch, caplog):
    """Emulated bf16 is 9-20x slower than fp32: a run asking for it on such a CPU trains in
    fp32 and says so; a CPU that computes bf16 gets it."""
    for native, warned in ((True, False), (False, True)):
        monkeypatch.setattr(common, "native_cpu_bf16", lambda native=native: native)
        caplog.clear()
        with caplog.at_level("WARNING", logger="train"):
            accelerator = common.make_accelerator(
                ToyOptions(output_dir=str(tmp_path), bf16=True, use_cpu=True)
            )
        assert ("without native bf16" in caplog.text) == warned
        assert accelerator.mixed_precision == ("bf16" if native else "no")
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):
        common.make_accelerator(ToyOptions(output_dir=str(tmp_path), use_cpu=True))  # fp32
    assert "bf16" not in caplog.text


def test_threads_after_takes_one_more_thread_once_the_file_exists(tmp_path):
    before = torch.get_num_threads()
    flag = tmp_path / "other" / "summary.json"
    try:
        torch.set_num_threads(1)
        run(tmp_path / "absent", threads_after=str(flag))
        assert torch.get_num_threads() == 1  # the other process is still busy
        flag.parent.mkdir()
        flag.write_text("{}")
        run(tmp_path / "present", threads_after=str(flag))
        assert torch.get_num_threads() == 2  # taken once, not once per step
    finally:
        torch.set_num_threads(before)
