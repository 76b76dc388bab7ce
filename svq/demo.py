"""`svq demo`: the whole pipeline on the embedded default (the chat world), end to end.

    svq demo --out runs/demo --budget quick      # < 15 min on a 2-core CPU
    svq demo --out runs/demo --budget standard   # < 90 min

Stages, each a training script's `main` (or the eval suite) with the options of
`svq/configs/demo_<budget>.yaml` (a stage's config file + overrides):

    judge    the attribute judge the eval suite scores with: a judge the repository ships
             (svq/eval/judges/, trained by svq/train/judge.py), or one trained here
    stage1   the tokenizer: 36 continuous tokens (svq/train/stage1.py)
    stage2   the k-means vocabulary + decoder fine-tune on ids (svq/train/stage2.py)
    vq       the spatial VQ tokenizer, the last mile (svq/train/vq.py)
    sft      chat SFT of the tiny LLM: generate, stay consistent, understand (svq/train/llm_sft.py)
    baseline the same SFT with pictures written as the spatial VQ's grid, serially
    report   the eval suite over everything: RUN/report/report.html (svq/eval/report.py)

Every budget is in steps, so a loaded machine gives the same figures as a quiet one, only later.
Each stage's wall time goes to RUN/timings/<stage>.json; the run's record (figures, settings,
commit, machine, wall times) to RUN/demo.json, and with `--record PATH` there too.

Two cores: `judge`, `vq` and `baseline` run in a second process while `stage1`, `stage2`
and `sft` run in this one (each stage uses one thread, and a second once the other process is
left waiting on it, `FREES_A_CORE`; a stage waits for the stages it reads, `NEEDS`). A stage
is finished when its folder holds its summary; re-running skips finished stages, and stage 1
resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .configs import shipped_config
from .demo_record import demo_record, stage_seconds

BUDGETS = ("test", "quick", "standard")
ORDER = ("judge", "stage1", "stage2", "vq", "sft", "baseline", "report")
BACKGROUND = ("judge", "vq", "baseline")  # the second process's chain
NEEDS = {  # what a stage reads from earlier stages
    "stage2": ("stage1",),
    "sft": ("stage2", "vq", "judge"),
    "baseline": ("stage2", "vq", "judge"),
    "report": ("sft", "baseline"),
}
# stage -> the other process's stage whose end leaves that process waiting on this one: from
# then on this stage takes the idle core too (its `threads_after` option)
FREES_A_CORE = {
    "stage1": "vq",
    "stage2": "vq",
    "vq": "stage2",
    "sft": "baseline",
    "baseline": "sft",
}
DONE = {  # the file whose presence means a stage finished (written last by the stage)
    "judge": "judge/metrics.json",
    "stage1": "stage1/summary.json",
    "stage2": "stage2/summary.json",
    "vq": "vq/summary.json",
    "sft": "sft/summary.json",
    "baseline": "baseline/summary.json",
    "report": "report/report.json",
}


def load_budget(budget: str) -> dict[str, dict[str, Any]]:
    """The stage -> options table of a budget (svq/configs/demo_<budget>.yaml)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {BUDGETS}")
    table = yaml.safe_load(shipped_config(f"demo_{budget}").read_text())
    missing = [stage for stage in ORDER if stage not in table]
    if missing:
        raise ValueError(f"demo_{budget}.yaml has no options for {missing}")
    return table


def flags(options: dict[str, Any]) -> list[str]:
    """{"max_steps": 5, "prefix_ks": [0, 36], "model_overrides": {...}} -> ["--max_steps", "5",
    "--prefix_ks", "0", "36", "--model_overrides", '{...}'] for a script's parser (a list as
    several values, a dict as JSON)."""
    argv = []
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, list):
            argv += [f"--{key}", *(str(v) for v in value)]
        else:
            argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def script_argv(
    stage: str, options: dict[str, Any], run: Path, parallel: bool = False
) -> list[str]:
    """A training script's argv: its config file, then the budget's overrides, then the run's
    folders (which always win). `parallel`: the other process runs beside it, and the stage
    takes a second thread once that process is left waiting (FREES_A_CORE)."""
    options = dict(options)
    config = shipped_config(options.pop("config"))
    folders = {"output_dir": run / stage}
    if parallel and stage in FREES_A_CORE:
        folders["threads_after"] = run / DONE[FREES_A_CORE[stage]]
    if stage == "stage1":
        folders["resume_from_checkpoint"] = "latest"
    if stage == "stage2":
        folders["model_path"] = run / "stage1" / "model"
    if stage in ("sft", "baseline"):
        folders.update(svq_path=run / "stage2" / "model", spatial_vq_path=run / "vq" / "model",
                       judge_path=run / "judge")  # fmt: skip
    return [str(config), *flags(options), *flags({k: str(v) for k, v in folders.items()})]


# --- the stages ----------------------------------------------------------------------------


def run_judge(run: Path, options: dict[str, Any]) -> None:
    """{"shipped": SIZE}: copy the judge the repository ships for SIZE px pictures into
    RUN/judge (the eval suite gates it at the run's picture size); otherwise train one with
    those svq/train/judge.py options."""
    options = dict(options)
    size = options.pop("shipped", None)
    if size is not None:
        from svq.eval.judge import shipped_judge

        if options:
            raise ValueError(f"the shipped judge takes no training options, got {sorted(options)}")
        source, folder = shipped_judge(size), run / "judge"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "run_config.json", "metrics.json"):
            shutil.copyfile(source / name, folder / f"{name}.tmp")
        for name in ("config.json", "model.safetensors", "run_config.json", "metrics.json"):
            (folder / f"{name}.tmp").replace(folder / name)  # metrics.json (DONE) last
        return
    from svq.train.judge import train as train_judge

    train_judge(run / "judge", **options)


SCRIPT_TRAINERS = {  # stage -> its trainer in svq.train.TRAINERS
    "stage1": "stage1",
    "stage2": "stage2",
    "vq": "vq",
    "sft": "sft",
    "baseline": "sft",  # with image_tokenizer: spatial
}


def run_script(run: Path, stage: str, options: dict[str, Any], parallel: bool = False) -> dict:
    from svq.train import common, trainer

    module, options_class = trainer(SCRIPT_TRAINERS[stage])
    argv = script_argv(stage, options, run, parallel)
    return module.main(common.parse_options(options_class, argv))


def run_report(run: Path, options: dict[str, Any]) -> dict:
    from svq.eval.report import build_report

    return build_report(run, **options)


def done(run: Path, stage: str) -> bool:
    return (run / DONE[stage]).is_file()


def run_stage(run: Path, budget: str, stage: str, parallel: bool = False) -> None:
    """Run one stage in this process (one torch thread; `parallel`: two once the other
    process is left waiting), unless it is finished."""
    import torch

    if done(run, stage):
        print(f"[demo] {stage}: finished before, skipped", flush=True)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-core machine: one thread per stage, two stages at once
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # not every checkpoint file
    options = load_budget(budget)[stage]
    print(f"[demo] {stage}: starting", flush=True)
    start = time.perf_counter()
    try:
        if stage == "judge":
            run_judge(run, options)
        elif stage == "report":
            run_report(run, options)
        else:
            run_script(run, stage, options, parallel)
    finally:
        torch.set_num_threads(threads)  # a stage may have taken the idle core
    seconds = time.perf_counter() - start
    (run / "timings").mkdir(exist_ok=True)
    (run / "timings" / f"{stage}.json").write_text(json.dumps({"seconds": round(seconds, 1)}))
    print(f"[demo] {stage}: done in {seconds:.0f} s", flush=True)


def start_background(run: Path, budget: str, stages: list[str]) -> subprocess.Popen | None:
    """The second process: `python -m svq.demo --stages judge,vq ...`, logging to a file."""
    todo = [s for s in stages if not done(run, s)]
    if not todo:
        return None
    log = (run / "background.log").open("a")
    command = [sys.executable, "-m", "svq.demo", "--out", str(run), "--budget", budget,
               "--stages", ",".join(todo)]  # fmt: skip
    print(f"[demo] {', '.join(todo)}: running in a second process (log: {log.name})", flush=True)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_for(run: Path, stages: tuple[str, ...], process: subprocess.Popen | None = None) -> None:
    """Block until `stages` are finished (the other process is doing them); an error if that
    process ends without finishing them."""
    while not all(done(run, stage) for stage in stages):
        if process is not None and process.poll() is not None:
            log = run / "background.log"
            tail = "".join(log.read_text().splitlines(True)[-20:]) if log.is_file() else ""
            missing = [stage for stage in stages if not done(run, stage)]
            raise RuntimeError(
                f"the second process ended (exit {process.returncode}) without finishing "
                f"{missing}; the end of {log}:\n{tail}"
            )
        time.sleep(2)


def pipeline_minutes(seconds: dict[str, float], parallel: bool = True) -> float | None:
    """The whole pipeline's wall time from its stages' (None if one is missing): each stage
    starts when its process is free and the stages it reads (NEEDS) are finished; BACKGROUND
    stages run in the second process when `parallel`. For a run that reused stages of an
    earlier one, this is the time a fresh run would take, where `wall_minutes` is the time of
    the stages that ran."""
    if any(stage not in seconds for stage in ORDER):
        return None
    free, finish = {True: 0.0, False: 0.0}, {}
    for stage in ORDER:
        process = parallel and stage in BACKGROUND
        begin = max([free[process], *(finish[need] for need in NEEDS.get(stage, ()))])
        finish[stage] = free[process] = begin + seconds[stage]
    return round(max(finish.values()) / 60, 1)


def run_demo(
    out: str | Path, budget: str = "quick", parallel: bool = True, record: str | Path | None = None
) -> dict:
    """Every stage into `out` (see the module docstring); returns the run's record (also in
    OUT/demo.json, and in `record` when given)."""
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    load_budget(budget)  # a bad budget fails before anything starts
    reused = [stage for stage in ORDER if done(run, stage)]
    start = time.perf_counter()
    background = start_background(run, budget, list(BACKGROUND)) if parallel else None
    try:
        for stage in ORDER:
            if background is not None and stage in BACKGROUND:
                continue
            wait_for(run, NEEDS.get(stage, ()), background)
            run_stage(run, budget, stage, parallel=background is not None)
    finally:
        if background is not None and background.poll() is None:
            background.terminate()
    minutes = round((time.perf_counter() - start) / 60, 1)
    whole = pipeline_minutes(stage_seconds(run), parallel)
    result = demo_record(run, budget, minutes, load_budget(budget), reused, whole)
    text = json.dumps(result, indent=1) + "\n"
    (run / "demo.json").write_text(text)
    if record is not None:
        Path(record).parent.mkdir(parents=True, exist_ok=True)
        Path(record).write_text(text)
    return result


def headlines(result: dict) -> list[str]:
    """The lines the demo ends with: reconstruction from the ids beside its baselines, the
    judge's gate, following and understanding beside chance and the blind answer."""
    f = result["figures"]
    rec, base = f["reconstruction"], f["trivial_baselines"]
    gate, chat = f["judge_gate"], f["chat"] or {}
    thumb = base.get("thumbnail 8x8")
    lines = [
        f"reconstruction from the 36 ids: {_num(rec['psnr_ids'], '{:.2f} dB')} "
        f"(continuous {_num(rec['psnr_continuous'], '{:.2f} dB')}; 8x8 thumbnail "
        f"{_num(thumb, '{:.2f} dB')})",
        f"judge gate: {'passed' if gate['passed'] else 'FAILED, judged figures refused'} "
        f"(lowest attribute {_num(gate['lowest'], '{:.1%}')} on clean renders)",
    ]
    following = chat.get("following") or {}
    lines.append(
        f"pictures that follow the request: {_ci(following.get('mean'), following.get('ci'))} "
        f"(chance {_num(following.get('chance'), '{:.1%}')}, one constant picture "
        f"{_num(following.get('best_constant'), '{:.1%}')})"
    )
    u = chat.get("understanding") or {}
    lines.append(
        f"right answers about shown pictures: {_ci(u.get('accuracy'), u.get('ci'))} (blind "
        f"majority answer {_num(u.get('blind_majority'), '{:.1%}')})"
    )
    return lines


def _num(value: float | None, form: str) -> str:
    return "not measured" if value is None else form.format(value)


def _ci(value: float | None, interval: list | None) -> str:
    if value is None:
        return "not measured"
    tail = f" [{interval[0]:.1%}, {interval[1]:.1%}]" if interval else ""
    return f"{value:.1%}{tail}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="the whole pipeline on the chat world: tokenizer, vocabulary, spatial VQ, chat "
        "SFT, eval report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument(
        "--budget", default="quick", choices=BUDGETS,
        help="quick: < 15 min on 2 cores; standard: < 90 min; test: seconds, for the tests",
    )  # fmt: skip
    parser.add_argument(
        "--sequential", action="store_true", help="one process: no second chain of stages"
    )
    parser.add_argument(
        "--record", help="also write the run's record (figures, settings, commit, machine, wall "
        "times) to this JSON file, e.g. benchmarks/results/demo_quick.json",
    )  # fmt: skip
    parser.add_argument("--stages", help=argparse.SUPPRESS)  # the second process's chain


def _run(args: argparse.Namespace) -> int:
    if args.stages:  # inside the second process
        for stage in args.stages.split(","):
            wait_for(Path(args.out), NEEDS.get(stage, ()))  # e.g. stage 2, from the first
            run_stage(Path(args.out), args.budget, stage, parallel=True)
        return 0
    result = run_demo(args.out, args.budget, parallel=not args.sequential, record=args.record)
    report = Path(args.out) / "report" / "report.html"
    print(f"\n[demo] finished in {result['wall_minutes']} min; report: {report}")
    for line in headlines(result):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    main_parser = argparse.ArgumentParser(prog="python -m svq.demo")
    add_arguments(main_parser)
    sys.exit(_run(main_parser.parse_args()))
