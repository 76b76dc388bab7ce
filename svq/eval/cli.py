"""`svq eval`: the evaluation suite from the command line, one sub-command per part.

    svq eval all --run runs/demo                       # report.json + report.html in RUN/report
    svq eval reconstruction --model runs/demo/stage2/model --judge runs/demo/judge --out o/
    svq eval ordering --model runs/demo/stage1/model --out o/
    svq eval codebook --model runs/demo/stage2/model --out o/
    svq eval chat --model runs/demo/sft/model --judge runs/demo/judge --out o/

Each writes <part>.json (and its PNGs) into --out. Heavy modules are imported when a command
runs, so `svq --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PARTS = ("reconstruction", "ordering", "codebook", "chat", "all")


def _common(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--out", required=True, help="output folder for the JSON and PNGs")
    if "SVQChat" not in model_help:
        parser.add_argument(
            "--spatial_vq",
            help="the SpatialVQ folder a tokenizer with target 'spatial_vq' paints through",
        )


def _pictures(parser: argparse.ArgumentParser, default: int = 64) -> None:
    parser.add_argument(
        "--num_images", type=int, default=default, help=f"held-out pictures (default {default})"
    )
    parser.add_argument(
        "--split", default="validation", help="chat-world split to draw them from (validation)"
    )
    parser.add_argument("--seed", type=int, default=0, help="chat-world seed (default 0)")


def _judge(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--judge",
        required=required,
        help="an AttributeJudge folder (svq.train.judge); without it judge scores are skipped",
    )


def _optional_metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inception",
        help="Inception TorchScript file for rFID (inception-2015-12-05.pt; default: "
        "$SVQ_INCEPTION or the torch hub cache; skipped with a note when absent)",
    )
    parser.add_argument(
        "--no_lpips", action="store_true", help="skip LPIPS even when its weights are present"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a run: reconstruction, ordering, codebook, chat, or all (the report)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parts = parser.add_subparsers(dest="part", required=True, metavar="PART")

    p = parts.add_parser(
        "reconstruction",
        help="PSNR, SSIM, LPIPS, rFID and judge accuracy of reconstructions; a grid PNG",
    )
    _common(p, "a StyledVAEVQ folder (with codebook.safetensors: quantised too) or a SpatialVQ")
    _judge(p)
    _pictures(p)
    _optional_metrics(p)
    p.set_defaults(run=_reconstruction)

    p = parts.add_parser(
        "ordering",
        help="prefix curve, group / single-token ablations, per-token probes, token-swap test",
    )
    _common(p, "a StyledVAEVQ folder")
    _judge(p)
    _pictures(p)
    p.add_argument(
        "--probe_images", type=int, default=256, help="train pictures to fit probes on (0: none)"
    )
    p.add_argument("--no_single", action="store_true", help="skip single-token ablations")
    p.set_defaults(run=_ordering)

    p = parts.add_parser(
        "codebook", help="code usage, perplexity, dead codes per position, re-encode stability"
    )
    _common(p, "a StyledVAEVQ folder with codebook.safetensors")
    _pictures(p)
    p.set_defaults(run=_codebook)

    p = parts.add_parser(
        "chat",
        help="instruction following, identity consistency, understanding (svq.eval.chat_eval)",
    )
    _common(p, "an SVQChat folder (svq/llm/chat.py)")
    _judge(p)
    p.add_argument("--num_dialogues", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lang", default="en", choices=("en", "zh"))
    p.add_argument(
        "--image_decoder",
        choices=("vq_head", "svq"),
        help="how written pictures become pixels: the VQ head + spatial decoder, or the svq "
        "decoder on the written ids (default: the model's own)",
    )
    p.set_defaults(run=_chat)

    p = parts.add_parser(
        "all", help="every part of a run folder -> report.json + a self-contained report.html"
    )
    p.add_argument(
        "--run", dest="run_dir", required=True, help="the run folder (what `svq demo` writes)"
    )
    p.add_argument("--out", help="output folder (default RUN/report)")
    p.add_argument("--judge", help="an AttributeJudge folder (default RUN/judge)")
    _pictures(p)
    p.add_argument("--probe_images", type=int, default=256)
    p.add_argument("--no_single", action="store_true", help="skip single-token ablations")
    _optional_metrics(p)
    p.add_argument(
        "--rerun_chat",
        action="store_true",
        help="evaluate RUN/sft/model afresh instead of reading RUN/sft/chat_eval.json",
    )
    p.add_argument("--num_dialogues", type=int, default=8, help="with --rerun_chat")
    p.add_argument(
        "--pin_identity", type=int, nargs=2, metavar=("START", "STOP"),
        help="evaluate RUN/sft/model again with tokens START..STOP-1 pinned to a reference "
        "(the person's tokens of a tokenizer trained with attribute_identity_tokens)",
    )  # fmt: skip
    p.add_argument(
        "--baseline_fit_images", type=int, default=3000,
        help="train pictures the PCA baselines are fitted on (0: no trivial baselines)",
    )  # fmt: skip
    p.add_argument(
        "--strict", action="store_true", help="stop at a failing section instead of noting it"
    )
    p.set_defaults(run=_all)


# --- the commands


def _folder(path: str, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    return folder


def _write(out: str, name: str, result: dict) -> Path:
    from .reconstruction import jsonable

    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(result), indent=1) + "\n")
    return path


def _fail(part: str, reason: object) -> int:
    print(f"svq eval {part}: error: {reason}", file=sys.stderr)
    return 2


def _load_judge(path: str | None):
    from .judge import load_judge

    return None if path is None else load_judge(_folder(path, "judge"))


def _gated_judge(path: str | None, size: int):
    """The judge at `path` if it passes its gate at `size` (eval.gate), else None; says which."""
    from .gate import judge_gate

    judge = _load_judge(path)
    if judge is None:
        return None
    gate = judge_gate(judge, size)
    print(f"judge: {gate.reason}")
    return judge if gate.passed else None


def _tokenizer(args: argparse.Namespace):
    from svq import StyledVAEVQ

    return StyledVAEVQ.load(_folder(args.model, "model"), spatial_vq=args.spatial_vq)


def _model_type(path: str) -> str | None:
    config = _folder(path, "model") / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a saved model")
    return json.loads(config.read_text()).get("model_type")


def _reconstruction(args: argparse.Namespace) -> int:
    from .reconstruction import evaluate_reconstruction, evaluate_spatial_vq, world_images

    if _model_type(args.model) == "spatial_vq":
        from svq.spatial_vq import SpatialVQ

        model = SpatialVQ.from_pretrained(args.model)
        images, _ = world_images(args.num_images, model.config.image_size, args.split, args.seed)
        result = evaluate_spatial_vq(model, images, out_dir=args.out)
    else:
        model = _tokenizer(args)
        judge = _gated_judge(args.judge, model.config.image_size)
        images, labels = world_images(
            args.num_images, model.config.image_size, args.split, args.seed
        )
        result = evaluate_reconstruction(
            model,
            images,
            labels,
            judge,
            lpips=None if args.no_lpips else "auto",
            inception=args.inception or "auto",
            out_dir=args.out,
        )
    path = _write(args.out, "reconstruction", result)
    rows = {k: result[k] for k in ("continuous", "quantised") if "psnr" in result.get(k, {})}
    for kind, row in (rows or {"spatial VQ": result}).items():
        print(f"{kind}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}")
    for note in result.get("notes", {}).values():
        print(f"note: {note}")
    print(f"wrote {path}")
    return 0


def _ordering(args: argparse.Namespace) -> int:
    from .reconstruction import world_images
    from .report import ordering_section

    model = _tokenizer(args)
    judge = _gated_judge(args.judge, model.config.image_size)
    images, labels = world_images(args.num_images, model.config.image_size, args.split, args.seed)
    out = Path(args.out)
    result = ordering_section(
        model, images, labels, judge, out, args.probe_images, not args.no_single, args.seed
    )
    path = _write(args.out, "ordering", result)
    curve = ", ".join(f"k={r['k']}: {r['psnr']:.2f}" for r in result["prefix"][::6])
    print(f"prefix curve (dB): {curve}")
    print(f"wrote {path} and its plots")
    return 0


def _codebook(args: argparse.Namespace) -> int:
    from .reconstruction import world_images
    from .report import NotRun, codebook_section

    model = _tokenizer(args)
    images, _ = world_images(args.num_images, model.config.image_size, args.split, args.seed)
    try:
        result = codebook_section(model, images, Path(args.out))
    except NotRun as reason:
        return _fail("codebook", f"{args.model}: {reason}; fit one with svq/train/stage2.py")
    path = _write(args.out, "codebook", result)
    o = result["overall"]
    print(
        f"{o['used']} of {result['num_codes']} codes used, perplexity {o['perplexity']:.1f}, "
        f"re-encode stability {100 * result['stability']['tokens']:.1f}% of tokens"
    )
    print(f"wrote {path}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .report import NotRun, run_chat_eval

    _folder(args.model, "model")
    try:
        path = run_chat_eval(
            Path(args.model),
            _load_judge(args.judge),
            Path(args.out),
            args.num_dialogues,
            args.seed,
            args.lang,
            args.image_decoder,
        )
    except NotRun as reason:
        return _fail("chat", reason)
    print(f"wrote {path}")
    return 0


def _all(args: argparse.Namespace) -> int:
    from .report import build_report

    report = build_report(
        _folder(args.run_dir, "run"),
        args.out,
        num_images=args.num_images,
        split=args.split,
        seed=args.seed,
        judge_path=args.judge,
        probe_images=args.probe_images,
        single_tokens=not args.no_single,
        lpips=None if args.no_lpips else "auto",
        inception=args.inception or "auto",
        rerun_chat=args.rerun_chat,
        chat_dialogues=args.num_dialogues,
        chat_pin_identity=args.pin_identity,
        baseline_fit_images=args.baseline_fit_images,
        strict=args.strict,
    )
    for name, section in report["sections"].items():
        reason = section.get("reason")
        print(f"{name:15s} {section['status']}" + (f": {reason}" if reason else ""))
    for row in report["sections"]["summary"]["headline"]:
        print(f"  {row['label']}: {row['value']:.4g} {row['unit']}")
    out = Path(args.out) if args.out else Path(args.run_dir) / "report"
    print(f"wrote {out / 'report.json'} and {out / 'report.html'}")
    return 0
