"""Small helpers every training stage shares: options, checkpoints, optimiser groups, schedule,
the non-finite-loss stop, data iteration and run records.

Each stage script (`svq/train/stage1.py`, ...) keeps its own story readable top to bottom: a
dataclass of options, then setup, data, model, optimiser, loop, save. Only what would be copied
verbatim between stages lives here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration, skip_first_batches
from accelerate.state import AcceleratorState
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from torch import nn
from transformers import HfArgumentParser, get_scheduler

from svq.configs import config_path
from svq.errors import INPUT_ERRORS, report
from svq.provenance import native_cpu_bf16

T = TypeVar("T")
CHECKPOINTS = "checkpoints"  # resumable states live in OUTPUT_DIR/checkpoints/step-NNNNNNNN
STATE_FILE = "trainer_state.json"  # written last: a checkpoint folder without it is unfinished
_STEP_DIR = re.compile(r"^step-(\d+)$")


# --- options -------------------------------------------------------------------------------


def parse_options(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """Parse `[CONFIG] [--flag value ...]` into the dataclass `cls`; CONFIG is a YAML or JSON
    file, or the name of a shipped one (`stage1_tiny`: svq/configs/).

    The file's values become the defaults and the flags override them (the file first), with
    `transformers.HfArgumentParser` doing the typing, `--help` and the `--no_flag` forms. A key
    in the file that is not an option, a syntax error or a value of the wrong type is a
    ValueError naming the file (and line, or option), not silently dropped. `prog`: the command
    name `--help` and errors show (default: the script's).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(cls, prog=prog)
    if args and not args[0].startswith("-"):
        path = config_path(args.pop(0))
        values = read_config(path)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown options {unknown}; see --help for the list")
        for action in parser._actions:  # the file's values become defaults
            if action.dest in values:
                _check_file_value(path, action, values[action.dest])
                action.default = values[action.dest]  # strings still go through `type`
                action.required = False
    (options,) = parser.parse_args_into_dataclasses(args=args, look_for_args_file=False)
    return options


def read_config(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) file of options as a dict; a missing file or bad syntax is an error
    naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}  # YAML reads JSON too
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    return values


def _check_file_value(path: Path, action: Any, value: Any) -> None:
    """A file's value must convert with the option's type: here, so that the error names the
    file and the option (argparse would print its whole usage and not say where it came
    from)."""
    kind = action.type
    if not callable(kind) or kind is str or value is None or action.nargs in ("+", "*"):
        return
    if isinstance(value, str):
        try:
            kind(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"{path}: {action.dest}: invalid value {value!r}") from None
    elif kind in (int, float) and not isinstance(value, int | float):
        raise ValueError(f"{path}: {action.dest}: expected a number, got {value!r}")


def json_option(name: str, value: Any) -> dict | None:
    """An option holding a dict: a dict, None / "" / "none", or a JSON object as a string (the
    command line's form). A string that is not a JSON object is an error naming the option."""
    value = none_if_empty(value) if isinstance(value, str) else value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}: not valid JSON ({error}): {value!r}") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object of fields, got {value!r}")
    return value


def none_if_empty(value: Any) -> Any:
    """ "", "none" and "None" (what a YAML file or a flag gives for no value) -> None."""
    return None if value in ("", "none", "None") else value


def check_training_options(o: Any, positive: Sequence[str] = ()) -> None:
    """The checks every stage's options share: per-device batch, accumulation and logging steps
    (and the stage's own `positive` fields) >= 1; max_steps > 0 or -1 where the stage has it;
    one of bf16 and fp16."""
    shared = ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps")
    for name in (*shared, *positive):
        if getattr(o, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(o, name)}")
    max_steps = getattr(o, "max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        raise ValueError(f"max_steps must be > 0, or -1 for num_train_epochs; got {max_steps}")
    if o.bf16 and o.fp16:
        raise ValueError("choose one of bf16 and fp16")


def make_accelerator(o: Any, **kwargs: Any) -> Accelerator:
    """The Accelerator of a run from its TrainingArguments-named options (use_cpu, bf16/fp16,
    gradient_accumulation_steps, report_to, output_dir, seed); kwargs go to Accelerator.

    One process may run several stages one after another (`svq demo`), each with its own
    precision: accelerate keeps the first stage's in a process-wide state and refuses a
    change, so that state is dropped first (the process group, `PartialState`, stays).

    bf16 is a speed option: on a CPU that does not compute it natively, where autocast would
    emulate it 9-20x slower than fp32, the run trains in fp32 and says so."""
    AcceleratorState._reset_state()
    cpu = o.use_cpu or not torch.accelerator.is_available()
    bf16 = o.bf16
    if bf16 and cpu and not native_cpu_bf16():
        logging.getLogger("train").warning(
            "bf16 asked on a CPU without native bf16 (emulated, 9-20x slower): training in fp32"
        )
        bf16 = False
    return Accelerator(
        # On a machine without GPU accelerate needs cpu=True to form a process group (gloo)
        # from torchrun's variables; without it each process would train alone.
        cpu=cpu,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=o.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        mixed_precision="bf16" if bf16 else "fp16" if o.fp16 else None,
        log_with=None if o.report_to == "none" else o.report_to,
        project_config=ProjectConfiguration(o.output_dir, logging_dir=f"{o.output_dir}/logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=o.seed),
        **kwargs,
    )


def write_yaml(data: dict[str, Any], path: str | Path) -> Path:
    """Write `data` as YAML atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


def flat_scalars(data: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """Nested options -> a flat dict of scalars (lists and None as strings), e.g. for the
    hyper-parameter table of TensorBoard, which accepts nothing else."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


# --- optimiser -----------------------------------------------------------------------------

NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding)


def param_groups(
    model: nn.Module, weight_decay: float, no_decay: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only.

    No decay on biases, 1-D parameters, parameters of norms and embeddings, and the tables named
    in `no_decay` (exact parameter names, e.g. positional tables and learned queries, which are
    2-D but are lookup tables, not maps). Names in `no_decay` that the model lacks are ignored,
    so one list serves every option of a model. Frozen parameters are left out.
    """
    tables = set(no_decay)
    table_modules = {
        f"{name}.{p}" if name else p
        for name, module in model.named_modules()
        if isinstance(module, NO_DECAY_MODULES)
        for p, _ in module.named_parameters(recurse=False)
    }
    decay, keep = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = param.ndim < 2 or name.endswith("bias") or name in tables or name in table_modules
        (keep if plain else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def adamw(
    module: nn.Module, o: Any, no_decay: Iterable[str] = (), lr: float | None = None
) -> torch.optim.AdamW:
    """AdamW over `param_groups(module, o.weight_decay, no_decay)` with the options' betas, eps
    and learning rate (or `lr`)."""
    return torch.optim.AdamW(
        param_groups(module, o.weight_decay, no_decay),
        lr=o.learning_rate if lr is None else lr,
        betas=(o.adam_beta1, o.adam_beta2),
        eps=o.adam_epsilon,
    )


def warmup_steps(max_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    """`warmup_steps` when > 0, else `warmup_ratio` of the run (TrainingArguments' rule)."""
    return warmup_steps if warmup_steps > 0 else round(warmup_ratio * max_steps)


def run_length(o: Any, loader: Any, sized: bool = True) -> int:
    """Optimiser steps of a run: `o.max_steps`, or with -1 `o.num_train_epochs` passes over a
    sized `loader` (a stream has no length: then max_steps is required)."""
    if o.max_steps > 0:
        return o.max_steps
    if not sized:
        raise ValueError("a stream has no length: set --max_steps")
    return math.ceil(o.num_train_epochs * len(loader) / o.gradient_accumulation_steps)


def make_scheduler(accelerator: Accelerator, o: Any, optimizer: Any, max_steps: int) -> tuple:
    """(the learning-rate scheduler of `o.lr_scheduler_type` with its warm-up, the warm-up
    steps). Not prepared: accelerate would step it once per process; it steps once per
    optimiser step, and checkpoints carry it as a registered object."""
    warmup = warmup_steps(max_steps, o.warmup_steps, o.warmup_ratio)
    scheduler = get_scheduler(o.lr_scheduler_type, optimizer, warmup, max_steps)
    accelerator.register_for_checkpointing(scheduler)
    return scheduler, warmup


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of `model`'s parameters and buffers, or None if decay 0."""
    if decay <= 0:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# --- the non-finite stop -------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) is NaN or infinite: the run stops, nothing is saved."""


def stop_if_nonfinite(
    accelerator: Accelerator,
    value: torch.Tensor,
    what: str,
    step: int,
    last_checkpoint: Path | None,
) -> None:
    """Raise NonFiniteLossError on every process if `value` is not finite on any of them (all
    processes must agree, or the healthy ones would wait for the others for ever)."""
    bad = (~torch.isfinite(value.detach().float())).any().float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() == 0:
        return
    kept = (
        f"the last good checkpoint is {last_checkpoint}; continue from it with "
        "--resume_from_checkpoint latest (e.g. with a lower --learning_rate or "
        "--max_grad_norm)"
        if last_checkpoint is not None
        else "no checkpoint was saved before it"
    )
    raise NonFiniteLossError(
        f"stopping: the {what} is {value.detach().float().flatten()[0].item()} (non-finite) "
        f"at step {step}; nothing from this step was applied or saved, {kept}"
    )


def backward_step(
    accelerator: Accelerator,
    loss: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    o: Any,
    step: int,
    last_checkpoint: Path | None,
) -> torch.Tensor | None:
    """One micro-step inside `accelerator.accumulate(model)`: stop on a non-finite loss,
    backward, and on the step that syncs, clip to `o.max_grad_norm` (0: off) and stop on a
    non-finite gradient norm; then the optimiser steps (accelerate makes it a no-op on the other
    micro-steps). Returns the gradient norm when it was clipped here, else None (DeepSpeed clips
    by its own config)."""
    stop_if_nonfinite(accelerator, loss, "loss", step, last_checkpoint)
    accelerator.backward(loss)
    grad_norm = None
    if accelerator.sync_gradients and o.max_grad_norm > 0:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), o.max_grad_norm)
        if grad_norm is not None and not o.fp16:  # fp16's scaler skips overflows itself
            stop_if_nonfinite(accelerator, grad_norm, "gradient norm", step, last_checkpoint)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# --- checkpoints ---------------------------------------------------------------------------


def step_folder(root: str | Path, step: int) -> Path:
    return Path(root) / CHECKPOINTS / f"step-{step:08d}"


def checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Finished checkpoints under ROOT/checkpoints, oldest first, as (step, folder)."""
    folder = Path(root) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = checkpoints(root)
    return found[-1][1] if found else None


def resolve_resume(output_dir: str | Path, resume: str | None, overwrite: bool) -> Path | None:
    """The checkpoint folder to resume from, or None for a fresh run.

    resume: None (fresh; an output folder that already holds checkpoints is an error unless
    `overwrite`), "latest" (the newest finished checkpoint, or a fresh start when there is none:
    the same command serves a first launch and a relaunch after preemption), or a folder.
    """
    if resume is None:
        if checkpoints(output_dir) and not overwrite:
            raise FileExistsError(
                f"{output_dir} already holds checkpoints: pass --resume_from_checkpoint latest "
                "to continue that run, or --overwrite_output_dir to start again"
            )
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a finished checkpoint (no {STATE_FILE} in it)")
    return path


def save_checkpoint(
    accelerator: Accelerator, root: str | Path, step: int, state: dict[str, Any], keep: int
) -> Path:
    """Save the resumable state (accelerate's `save_state`: model, optimiser, registered
    objects such as the scheduler and EMA, every process's RNG) plus `state` (step, data
    position...) as ROOT/checkpoints/step-NNNNNNNN, atomically.

    Everything is written into a hidden temporary folder; `trainer_state.json` goes last and a
    rename makes the folder visible. A run killed mid-save leaves only the temporary folder
    (ignored, removed by the next save), never a damaged checkpoint; older checkpoints beyond
    the newest `keep` are removed only after the new one is in place. All processes call this.
    """
    final = step_folder(root, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        for stale in final.parent.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_tmp = tmp / f".{STATE_FILE}.tmp"
        with open(state_tmp, "w") as f:
            json.dump(state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(state_tmp, tmp / STATE_FILE)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            _remove(final)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        for _, old in checkpoints(root)[:-keep] if keep > 0 else []:
            _remove(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, folder: str | Path) -> dict[str, Any]:
    """Restore what `save_checkpoint` saved; returns its `state` dict."""
    accelerator.load_state(str(folder))
    return json.loads((Path(folder) / STATE_FILE).read_text())


def start_state(
    accelerator: Accelerator, resume: Path | None, seed: int, fresh: dict[str, Any]
) -> dict[str, Any]:
    """The run's counters: from the checkpoint `resume` (which also restores the weights,
    optimiser, scheduler and RNG), or `fresh` with each process seeded for its own noise."""
    if resume is None:
        set_seed(seed, device_specific=True)  # each process its own noise and dropout
        return fresh
    state = load_checkpoint(accelerator, resume)
    logging.getLogger("train").info("resumed from %s at step %d", resume, state["step"])
    return state


def record_options(
    accelerator: Accelerator,
    o: Any,
    name: str,
    resume: Path | None,
    model_config: dict[str, Any] | None = None,
    **resolved: Any,
) -> dict[str, Any]:
    """The run's options, its model config and what was resolved at start (processes, the
    checkpoint it resumed from, and `resolved`) to OUTPUT_DIR/options.yaml (main process) and
    to the trackers; returns that record."""
    record = {**dataclasses.asdict(o)}
    if model_config is not None:
        record["model_config"] = model_config
    record["resolved"] = {"processes": accelerator.num_processes,
                          "resumed_from": str(resume) if resume else None, **resolved}  # fmt: skip
    _write_record(accelerator, record, Path(o.output_dir), name)
    return record


def _write_record(accelerator: Accelerator, resolved: dict[str, Any], out: Path, name: str):
    if accelerator.is_main_process:
        write_yaml(resolved, out / "options.yaml")
    accelerator.init_trackers(name, config=flat_scalars(resolved))


def run_script(main: Any, options_class: type, logger: logging.Logger) -> None:
    """A stage script's `__main__`: parse sys.argv into the options, run; a non-finite loss
    exits with status 1 after logging which step (the last checkpoint is kept); bad input (a
    missing or unreadable file, a bad option value) exits with status 2 and one line."""
    try:
        main(parse_options(options_class))
    except NonFiniteLossError as error:
        logger.error("%s", error)
        sys.exit(1)
    except INPUT_ERRORS as error:
        sys.exit(report(Path(sys.argv[0]).name, error))


def save_release(model: Any, out: str | Path) -> Path:
    """`model.save_pretrained` into OUT/model through OUT/.model.tmp and a rename, so a run
    killed mid-save leaves the previous release whole. Main process only."""
    out = Path(out)
    tmp, release = out / ".model.tmp", out / "model"
    if tmp.exists():  # left by a run killed mid-save
        _remove(tmp)
    model.save_pretrained(tmp)
    if release.exists():
        _remove(release)
    tmp.rename(release)
    return release


def _remove(folder: Path) -> None:
    """Rename first (atomic), then delete: a half-deleted folder never looks like a checkpoint."""
    trash = folder.with_name(f".trash-{folder.name}-{time.time_ns()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- data ----------------------------------------------------------------------------------


def endless_batches(loader: Iterable, start: int = 0) -> Iterator[Any]:
    """The batches of `loader`, pass after pass without end, beginning after `start` batches
    (the data position of a resumed run).

    A sized loader (map-style dataset) is re-entered with `set_epoch(pass)`, so a seedable
    sampler gives each pass its own order, and the skip happens in the sampler (no data is
    read). A stream (iterable dataset) is skipped by reading and dropping `start` batches.
    """
    try:
        per_pass = len(loader)  # type: ignore[arg-type]
    except TypeError:
        per_pass = None
    if per_pass is None:
        yield from skip_first_batches(loader, start) if start else loader
        raise RuntimeError("the training stream ended; streams for training must repeat")
    if per_pass == 0:
        raise ValueError("the training data has fewer images than one global batch")
    epoch, skip = divmod(start, per_pass)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from skip_first_batches(loader, skip) if skip else loader
        epoch, skip = epoch + 1, 0


# --- records -------------------------------------------------------------------------------


def scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested record, flattened for trackers: {"a": {"b": 1}} -> {"a/b": 1};
    lists become a/0, a/1, ...; strings and None are left out."""
    out: dict[str, float] = {}
    items = record.items() if isinstance(record, dict) else enumerate(record)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict | list | tuple):
            out.update(scalars(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def append_jsonl(record: dict[str, Any], path: str | Path) -> None:
    """Append one JSON line (validation passes, ...) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
