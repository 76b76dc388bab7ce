"""The optimisation loop every training stage runs: micro-batches with gradient accumulation,
the non-finite stops, the schedule, logs, validation and checkpoints. A stage gives it its loss
(and, where it has them, hooks for what happens around a step) through `Stage`.

    loop = Stage(loss=lambda batch, step: {"loss": ..., "mse": ...}, validate=...)
    result = train_loop(accelerator, o, loop, model=model, optimizer=optimizer,
                        scheduler=scheduler, batches=batches, state=state, max_steps=n,
                        global_batch=b)

`state` is the stage's resumable record (`common.start_state`): the loop advances
`state["step"]`, `state[seen]` and `state["train_seconds"]`, and checkpoints carry it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from svq.progress import progress_bar

from . import common

logger = logging.getLogger(__name__)

Terms = dict[str, torch.Tensor]


def _loss_and_speed(logs: dict[str, float], prefix: str, speed: str) -> dict[str, str]:
    return {"loss": f"{logs[f'{prefix}/loss']:.4f}", "img_s": f"{logs[f'{prefix}/{speed}']:.1f}"}


@dataclass
class Stage:
    """What one stage gives the loop.

    loss(batch, step) -> terms: one micro-batch's loss terms ("loss" is optimised; every term is
        logged), run inside `accelerator.accumulate(model)`; it moves the batch to the device
        and does its own autocast.
    before_step(step): before the micro-batches (e.g. the noise schedule).
    after_micro(batch, terms, step): after each micro-batch's backward (e.g. a discriminator).
    after_step(step): after the optimiser and schedule stepped (e.g. EMA, dead-code reseeding).
    logs() -> extra scalars logged beside the terms.
    validate(step, final) -> a record (appended to OUTPUT_DIR/validation.jsonl and logged under
        "val/"), or None when this step does not validate here.
    """

    loss: Callable[[Any, int], Terms]
    before_step: Callable[[int], None] | None = None
    after_micro: Callable[[Any, Terms, int], None] | None = None
    after_step: Callable[[int], None] | None = None
    logs: Callable[[], dict[str, float]] | None = None
    validate: Callable[[int, bool], dict[str, Any] | None] | None = None
    prefix: str = "train"  # the log namespace
    checkpoints: bool = True  # False: a phase whose state no checkpoint carries
    seen: str = "images_seen"  # the state key counting training items
    speed: str = "img_per_s"  # the log key of items per second
    postfix: Callable[[dict[str, float], str, str], dict[str, str]] = field(
        default=_loss_and_speed
    )  # logs, prefix, speed -> what the progress bar shows


@dataclass
class LoopResult:
    logs: dict[str, float]  # the last logged scalars
    record: dict[str, Any] | None  # the last validation record
    history: list[dict[str, float]]  # every logged step's scalars, with "step"


def train_loop(
    accelerator: Accelerator,
    o: Any,
    stage: Stage,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: Iterator[Any],
    state: dict[str, Any],
    max_steps: int,
    global_batch: int,
) -> LoopResult:
    """Steps state["step"] + 1 .. max_steps. `o` has the shared options (svq/train/options.py:
    gradient_accumulation_steps, max_grad_norm, logging_steps, save_steps, save_total_limit,
    output_dir; threads_after, when it has it). Every `logging_steps` (and the last step) the
    terms, learning rate, speed and gradient norm are logged; every `save_steps` (and the last
    step) a checkpoint is saved. Once the file `threads_after` exists, the steps take one more
    torch thread."""
    out = Path(o.output_dir)
    last_checkpoint = common.latest_checkpoint(out) if stage.checkpoints else None
    bar = progress_bar(
        total=max_steps, initial=state["step"], disable=not accelerator.is_main_process
    )
    window_start, window_items = time.perf_counter(), 0
    logs: dict[str, float] = {}
    history: list[dict[str, float]] = []
    record, grad_norm, terms = None, None, {}
    free_core = getattr(o, "threads_after", None)
    model.train()
    for step in range(state["step"] + 1, max_steps + 1):
        started = time.perf_counter()
        if free_core is not None and Path(free_core).is_file():
            torch.set_num_threads(torch.get_num_threads() + 1)
            logger.info("%s exists: %d torch threads from step %d", free_core,
                        torch.get_num_threads(), step)  # fmt: skip
            free_core = None
        if stage.before_step is not None:
            stage.before_step(step)
        for _ in range(o.gradient_accumulation_steps):
            batch = next(batches)
            with accelerator.accumulate(model):
                terms = stage.loss(batch, step)
                norm = common.backward_step(
                    accelerator, terms["loss"], model, optimizer, o, step, last_checkpoint
                )
                grad_norm = norm if norm is not None else grad_norm
            if stage.after_micro is not None:
                stage.after_micro(batch, terms, step)
        scheduler.step()
        if stage.after_step is not None:
            stage.after_step(step)
        state["step"], state[stage.seen] = step, state[stage.seen] + global_batch
        state["train_seconds"] += time.perf_counter() - started
        window_items += global_batch

        final = step == max_steps
        if step % o.logging_steps == 0 or final:
            p = stage.prefix
            logs = {f"{p}/{k}": v.item() for k, v in terms.items()}
            logs[f"{p}/lr"] = scheduler.get_last_lr()[0]
            logs[f"{p}/{stage.speed}"] = window_items / (time.perf_counter() - window_start)
            if stage.logs is not None:
                logs.update({f"{p}/{k}": v for k, v in stage.logs().items()})
            if grad_norm is not None:
                logs[f"{p}/grad_norm"] = float(grad_norm)
            accelerator.log(logs, step=step)
            history.append({"step": step, **logs})
            bar.set_postfix(**stage.postfix(logs, p, stage.speed), refresh=False)
            window_start, window_items = time.perf_counter(), 0
        bar.update(1)

        if stage.validate is not None:
            new = stage.validate(step, final)
            if new is not None:
                record = new
                log_validation(accelerator, record, out, step)
        if stage.checkpoints and (step % o.save_steps == 0 or final):
            last_checkpoint = common.save_checkpoint(
                accelerator, out, step, state, o.save_total_limit
            )
        accelerator.wait_for_everyone()  # a process may have validated: keep in step
    bar.close()
    return LoopResult(logs, record, history)


def log_validation(accelerator: Accelerator, record: dict[str, Any], out: Path, step: int) -> None:
    """A validation record to OUTPUT_DIR/validation.jsonl, the trackers ("val/") and the log."""
    common.append_jsonl(record, out / "validation.jsonl")
    accelerator.log(common.scalars(record, "val/"), step=step)
    logger.info("validation at step %d: %s", step, json.dumps(record))
