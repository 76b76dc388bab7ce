"""`build_report`: every evaluation of a run folder in one report.json and one report.html.

    report = build_report("runs/demo")              # -> runs/demo/report/report.{json,html}

The run folder is what `svq demo` writes; each part is optional:

    RUN/stage1/model, validation.jsonl, summary.json   stage 1 tokenizer and its validations
    RUN/stage2/model (+ codebook.safetensors)          the tokenizer with its codebook
    RUN/vq/model, summary.json                         the spatial VQ
    RUN/sft/model, summary.json, chat_eval.json        the chat model and its evaluation
    RUN/judge                                          the attribute judge

Sections: summary (headline figures), training, reconstruction, ordering, codebook,
spatial_vq, chat. Each is {"status": "ok", ...} or {"status": "not run", "reason": ...} (its
inputs are missing) or {"status": "error", "reason": ...} (it failed; the others still run,
unless `strict`). Plots and grids are PNG files next to report.json; report.html carries them
inline (base64), so the one file can be mailed or opened anywhere.

JSON has no infinity: a perfect reconstruction reads PSNR 100.0 dB (the cap of
`svq.eval.metrics.psnr`) and any other non-finite number is written as null (shown as a dash).

The section functions (`reconstruction_section`, `ordering_section`, ...) are what the
`svq eval` sub-commands call one at a time.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svq import StyledVAEVQ

from . import plots
from .gate import GateResult, judge_gate
from .html import render_html
from .reconstruction import (
    evaluate_reconstruction,
    evaluate_spatial_vq,
    jsonable,
    world_images,
)

SECTIONS = (
    "summary",
    "judge",
    "training",
    "reconstruction",
    "ordering",
    "codebook",
    "baselines",
    "spatial_vq",
    "chat",
)
JUDGE_HELP = "train one with `python -m svq.train.judge --output_dir RUN/judge` (or --judge DIR)"


class NotRun(Exception):
    """A section's inputs are missing; the message says which and how to get them."""


def not_run(reason: str) -> dict:
    return {"status": "not run", "reason": reason}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line; a truncated last line (a run killed mid-write) is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# --- finding a run's parts


def tokenizer_folder(run: Path) -> Path:
    """RUN/stage2/model when it exists (it has the codebook), else RUN/stage1/model."""
    for folder in (run / "stage2" / "model", run / "stage1" / "model"):
        if (folder / "config.json").is_file():
            return folder
    raise NotRun(f"no tokenizer: neither {run}/stage2/model nor {run}/stage1/model exists")


def find_judge(run: Path | None, judge_path: str | Path | None) -> tuple[nn.Module | None, str]:
    """(judge, where) or (None, why not). An explicit judge_path that fails is an error.
    The judge still has to pass its gate (`svq.eval.gate`) before it scores anything."""
    from .judge import load_judge

    if judge_path is not None:
        return load_judge(judge_path), str(judge_path)
    folder = None if run is None else run / "judge"
    if folder is None or not (folder / "config.json").is_file():
        return None, f"no judge at {folder}: {JUDGE_HELP}"
    try:
        return load_judge(folder), str(folder)
    except ValueError as error:  # trained on another schema
        return None, f"the judge at {folder} cannot be used: {error}"


# --- sections


def judge_section(where: str, gate: GateResult | None) -> dict:
    """The judge's gate at the report's picture size: every judged figure stands beside it."""
    if gate is None:
        raise NotRun(where)
    return {"status": "ok", "source": where, **gate.to_dict()}


def baselines_section(model: nn.Module, images: torch.Tensor, fit_images: int, bits: int | None):
    """Trivial references (svq.eval.baselines) on the report's pictures: mean picture, thumbnails,
    pixel PCA with the tokenizer's float count (36 x E) and with the ids' bits."""
    from .baselines import trivial_baselines

    if fit_images < 1:
        raise NotRun("baseline_fit_images is 0")
    c = model.config
    fit, _ = world_images(fit_images, c.image_size, "train", 0)
    rows = trivial_baselines(images, fit, c.num_tokens * c.token_dim, bits)
    return {
        "status": "ok",
        "n_images": len(images),
        "fit_images": fit_images,
        "resampling": "thumbnails: area down, bilinear up (align_corners=False)",
        "rows": [asdict(r) for r in rows],
    }


def training_section(run: Path, out: Path) -> dict:
    """Stage summaries and stage 1's validation curve (RUN/stage1/validation.jsonl)."""
    result: dict[str, Any] = {"status": "ok", "stages": {}}
    for stage in ("stage1", "stage2", "vq", "sft"):
        summary = run / stage / "summary.json"
        if summary.is_file():
            result["stages"][stage] = _read_json(summary)
    judge_metrics = run / "judge" / "metrics.json"
    if judge_metrics.is_file():
        metrics = _read_json(judge_metrics)
        result["judge"] = {
            "steps": metrics.get("steps"),
            "minutes": metrics.get("minutes"),
            "accuracy": {
                split: {name: v["accuracy"] for name, v in table.items()}
                for split, table in metrics.get("splits", {}).items()
            },
        }
    validation = run / "stage1" / "validation.jsonl"
    if validation.is_file():
        records = read_jsonl(validation)
        result["validation"] = [
            {k: r.get(k) for k in ("step", "psnr", "ssim", "images_seen", "train_seconds")}
            for r in records
        ]
        if records:
            result["plot"] = plots.training_plot(records, out / "training.png").name
    if len(result) == 2 and not result["stages"]:
        raise NotRun(f"no training records in {run} (stage1/, stage2/, vq/, sft/ summaries)")
    return result


def reconstruction_section(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    judge: nn.Module | None,
    out: Path,
    lpips: Any = "auto",
    inception: Any = "auto",
) -> dict:
    """`evaluate_reconstruction` with its grid written to `out`."""
    result = evaluate_reconstruction(
        model, images, labels, judge, lpips=lpips, inception=inception, out_dir=out
    )
    return {"status": "ok", **result}


@torch.no_grad()
def prefix_with_judge(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    judge: nn.Module | None,
    features: torch.Tensor,
    batch_size: int = 32,
) -> list[dict]:
    """The prefix curve (svq.eval.ordering.prefix_curve's rows, k = 0..N) with the judge's mean
    accuracy on each prefix's decodes added as judge_mean (per attribute: judge)."""
    from .metrics import psnr, ssim
    from .ordering import default_fill, replace_tokens

    n = features.shape[1]
    fill = default_fill(model, features)
    rows = []
    for k in range(n + 1):
        edited = replace_tokens(features, k, n, fill)
        recon = torch.cat([model.decode(f) for f in edited.split(batch_size)])
        p = psnr(recon, images)
        row = {
            "k": k,
            "psnr": p.mean().item(),
            "psnr_se": p.std().item() / len(p) ** 0.5 if len(p) > 1 else 0.0,
            "ssim": ssim(recon, images).mean().item(),
        }
        if judge is not None and labels is not None:
            acc = judge.accuracy(recon.clamp(-1, 1), labels)
            row["judge_mean"] = acc.mean().item()
            row["judge"] = judge.named(acc)
        rows.append(row)
    return rows


def ordering_section(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    judge: nn.Module | None,
    out: Path,
    probe_images: int = 256,
    single: bool = True,
    seed: int = 0,
    ablation_images: int = 32,
) -> dict:
    """Where the information sits among the tokens: the prefix curve (PSNR and judge accuracy
    vs k), group and single-token swap ablations (on the first `ablation_images`), per-token
    linear probes (fitted on
    `probe_images` train-split pictures, scored on `images`) and, with a judge, the token-swap
    test over groups of tokens. Plots prefix.png, ablation.png, probes.png."""
    from .ordering import default_groups, encode_all, group_ablation, single_token_ablation
    from .probes import encode_world, fit_probes, token_swap_test

    model.eval()
    features = encode_all(model, images, 32)  # (n, N, E)
    n = features.shape[1]
    result: dict[str, Any] = {"status": "ok", "n_images": len(images), "num_tokens": n}
    prefix = prefix_with_judge(model, images, labels, judge, features)
    result["prefix"] = prefix
    full = prefix[-1]["psnr"]
    gain = full - prefix[0]["psnr"]
    # None when the tokens add (almost) nothing: the k would be noise
    result["k_for_90pct_gain"] = (
        next((r["k"] for r in prefix if r["psnr"] - prefix[0]["psnr"] >= 0.9 * gain), n)
        if gain >= 0.1
        else None
    )
    result["prefix_plot"] = plots.prefix_plot(prefix, out / "prefix.png").name
    # The ablations decode once per group / token and score SSIM too: on at most
    # `ablation_images` pictures (their standard errors say how far to trust them).
    few, few_features = images[:ablation_images], features[:ablation_images]
    result["ablation_images"] = len(few)
    result["groups"] = group_ablation(model, few, features=few_features)
    result["singles"] = single_token_ablation(model, few, features=few_features) if single else None
    result["ablation_plot"] = plots.ablation_plot(
        result["groups"], result["singles"], out / "ablation.png"
    ).name
    if probe_images > 0:
        size = images.shape[-1]
        fit = encode_world(model.encode, probe_images, size, split="train", seed=seed)
        probes = fit_probes(*fit, features, labels)
        result["probes"] = {
            "attributes": list(probes.attributes),
            "accuracy": probes.accuracy,  # (N, A)
            "baseline": probes.baseline,
            "best_token": probes.best_token(),
            "fit_images": probe_images,
        }
        result["probe_plot"] = plots.probe_heatmap(
            probes.accuracy.tolist(), probes.attributes, out / "probes.png"
        ).name
    else:
        result["probes"] = {"skipped": "probe_images is 0"}
    if judge is None:
        result["swap_test"] = {"skipped": "no judge"}
    else:
        groups = [tuple(range(a, b)) for a, b in default_groups(n)]
        swaps = token_swap_test(model.decode, judge, features, positions=groups)
        result["swap_test"] = {
            "attributes": list(swaps.attributes),
            "groups": [f"{g[0]}-{g[-1]}" for g in swaps.positions],
            "changed": swaps.changed,
            "adopted": swaps.adopted,
        }
    return jsonable(result)


def codebook_section(model: nn.Module, images: torch.Tensor, out: Path) -> dict:
    """Code usage, perplexity, dead codes (overall and per position), the relative
    quantisation error and re-encode stability; plot usage.png."""
    from .codebook_metrics import codebook_report

    if getattr(model, "codebook", None) is None:
        raise NotRun("the tokenizer has no codebook (stage 2 not run)")
    report = codebook_report(model.eval(), images)
    u, s = report.usage, report.stability
    pp = u.per_position
    result = {
        "status": "ok",
        "n_images": len(images),
        "num_codes": u.num_codes,
        "per_position_codebook": u.per_position_codebook,
        "overall": {
            "used": int(u.overall.used),
            "dead": int(u.overall.dead),
            "usage": float(u.overall.usage),
            "perplexity": float(u.overall.perplexity),
        },
        "shared_codes": u.shared_codes,
        # what the ids carry: per position, not pooled over the 36 positions
        "bits_per_image": {"carried": u.bits_carried, "nominal": u.nominal_bits},
        "per_position_summary": {
            "used_min": int(pp.used.min()),
            "used_median": float(pp.used.float().median()),
            "used_max": int(pp.used.max()),
            "perplexity_median": float(pp.perplexity.float().median()),
        },
        "quantization_error": report.quantization_error,
        "stability": {"tokens": s.tokens, "sequences": s.sequences},
        "per_position": {
            "used": pp.used,
            "dead": pp.dead,
            "perplexity": pp.perplexity,
            "stable": s.per_position,
        },
    }
    result["plot"] = plots.usage_plot(
        pp.used.tolist(), pp.perplexity.tolist(), u.num_codes, out / "usage.png"
    ).name
    return jsonable(result)


def spatial_vq_section(run: Path, out: Path, num_images: int, split: str, seed: int) -> dict:
    """RUN/vq/model's reconstruction of chat-world pictures at its own size."""
    from svq.spatial_vq import SpatialVQ

    folder = run / "vq" / "model"
    if not (folder / "config.json").is_file():
        raise NotRun(f"no spatial VQ at {folder}")
    model = SpatialVQ.from_pretrained(str(folder)).eval()
    images, _ = world_images(num_images, model.config.image_size, split, seed)
    return {"status": "ok", **evaluate_spatial_vq(model, images, out_dir=out)}


def chat_section(
    run: Path,
    out: Path,
    judge: nn.Module | None = None,
    rerun: bool = False,
    num_dialogues: int = 8,
    seed: int = 0,
    pin_identity: Sequence[int] | None = None,
) -> dict:
    """RUN/sft/chat_eval.json (written by the SFT stage), or with `rerun` a fresh
    `chat_eval.evaluate_chat` of RUN/sft/model into out/chat/. Image paths in the transcripts
    stay relative to `base_dir`, the folder of the JSON. The scores of RUN/baseline (the same
    LLM writing the spatial VQ's grid serially) go beside them as "baseline" when present.
    pin_identity (positions): RUN/sft/model is evaluated again with those tokens pinned
    (`evaluate_chat(pin_identity=...)`, into out/chat_pinned/), its scores as "pinned"."""
    source = run / "sft" / "chat_eval.json"
    if rerun:
        source = run_chat_eval(run / "sft" / "model", judge, out / "chat", num_dialogues, seed)
    if not source.is_file():
        raise NotRun(
            f"no chat evaluation at {source} (the SFT stage writes it; or pass --rerun_chat "
            "with RUN/sft/model present)"
        )
    data = _read_json(source)
    baseline = run / "baseline" / "chat_eval.json"  # the serial spatial route (svq demo)
    if "baseline" not in data and baseline.is_file():
        data["baseline"] = {k: v for k, v in _read_json(baseline).items() if k != "transcripts"}
        data["baseline"]["source"] = str(baseline)
    if pin_identity is not None:
        path = run_chat_eval(run / "sft" / "model", judge, out / "chat_pinned", num_dialogues,
                             seed, pin_identity=pin_identity)  # fmt: skip
        data["pinned"] = {k: v for k, v in _read_json(path).items() if k != "transcripts"}
        data["pinned"]["source"] = str(path)
    return {"status": "ok", "source": str(source), "base_dir": str(source.parent), **data}


def run_chat_eval(
    model_dir: Path,
    judge: nn.Module | None,
    out: Path,
    num_dialogues: int = 8,
    seed: int = 0,
    lang: str = "en",
    image_decoder: str | None = None,
    pin_identity: Sequence[int] | None = None,
) -> Path:
    """Load an SVQChat folder, run `svq.eval.chat_eval.evaluate_chat` (without a judge: no judged
    scores), write out/chat_eval.json and its pictures in out/images/. `image_decoder`: how
    written pictures become pixels ("vq_head", "svq"; default: the model's own);
    `pin_identity`: token positions pinned (evaluate_chat)."""
    try:
        from .chat_eval import evaluate_chat
    except ImportError as error:
        raise NotRun(
            f"the chat evaluation module svq/eval/chat_eval.py is not available ({error})"
        ) from error
    from svq.llm.chat import SVQChat

    if not Path(model_dir).is_dir():
        raise NotRun(f"no chat model at {model_dir} (the SFT stage writes it)")
    chat = SVQChat.from_pretrained(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate_chat(
        chat, judge, num_dialogues=num_dialogues, seed=seed, out_dir=out, lang=lang,
        image_decoder=image_decoder, pin_identity=pin_identity,
    )  # fmt: skip
    path = out / "chat_eval.json"
    path.write_text(json.dumps(jsonable(result), indent=1) + "\n")
    return path


# --- the headline figures


def _get(tree: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _lowest(judge: dict | None) -> float | None:
    accuracy = (judge or {}).get("accuracy")
    return min(accuracy.values()) if accuracy else None


def summary_section(sections: dict[str, dict]) -> dict:
    """A few numbers a reader looks at first, each with the section it comes from."""
    rows: list[dict] = []

    def add(label: str, value: Any, section: str, unit: str = "") -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            rows.append({"label": label, "value": value, "unit": unit, "section": section})

    r, o = sections.get("reconstruction", {}), sections.get("ordering", {})
    c, v, ch = (
        sections.get("codebook", {}),
        sections.get("spatial_vq", {}),
        sections.get("chat", {}),
    )
    add("PSNR, continuous tokens", _get(r, "continuous", "psnr"), "reconstruction", "dB")
    add("SSIM, continuous tokens", _get(r, "continuous", "ssim"), "reconstruction")
    add("PSNR, quantised tokens", _get(r, "quantised", "psnr"), "reconstruction", "dB")
    add("quantisation cost", r.get("gap_db"), "reconstruction", "dB")
    add("LPIPS, continuous", _get(r, "continuous", "lpips"), "reconstruction")
    add("rFID, continuous", _get(r, "continuous", "rfid"), "reconstruction")
    add("judge on originals (mean)", _get(r, "judge", "mean", "originals"), "reconstruction")
    add("judge on reconstructions (mean)", _get(r, "judge", "mean", "continuous"), "reconstruction")
    add("judge on quantised (mean)", _get(r, "judge", "mean", "quantised"), "reconstruction")
    prefix = o.get("prefix") or []
    if prefix:
        add("PSNR with no token (k = 0)", prefix[0]["psnr"], "ordering", "dB")
        add("tokens for 90% of the PSNR gain", o.get("k_for_90pct_gain"), "ordering")
    add("codes used", _get(c, "overall", "used"), "codebook")
    add("codebook perplexity", _get(c, "overall", "perplexity"), "codebook")
    add("re-encode stability (tokens)", _get(c, "stability", "tokens"), "codebook")
    add("spatial VQ PSNR", v.get("psnr"), "spatial_vq", "dB")
    add("bits per image the ids carry", _get(c, "bits_per_image", "carried"), "codebook")
    for row in sections.get("baselines", {}).get("rows", []):
        add(f"baseline: {row['name']}", row["psnr"], "baselines", "dB")
    add("judge gate: lowest accuracy on clean renders", _lowest(sections.get("judge")), "judge")
    add("chat: pictures drawn when asked", _get(ch, "pictures_drawn", "value"), "chat")
    add("chat: generation following", _get(ch, "generation_following", "mean"), "chat")
    add("chat: following, chance level", _get(ch, "generation_following", "chance"), "chat")
    add(
        "chat: following, one constant picture",
        _get(ch, "generation_following", "best_constant"),
        "chat",
    )
    add(
        "chat: identity within a dialogue (control-corrected)",
        _get(ch, "identity_consistency", "within_dialogue", "value"),
        "chat",
    )
    add(
        "chat: identity vs the persona (control-corrected)",
        _get(ch, "identity_consistency", "vs_persona", "value"),
        "chat",
    )
    add("chat: distinct pictures (id sequences)", _get(ch, "diversity", "distinct_id_sequences"),
        "chat")  # fmt: skip
    add("chat: understanding accuracy", _get(ch, "understanding", "accuracy"), "chat")
    add("chat: understanding, blind majority", _get(ch, "understanding", "blind_majority"), "chat")
    add("chat: image-token validity", ch.get("image_token_validity"), "chat")
    status = {name: s.get("status") for name, s in sections.items()}
    return {"status": "ok", "headline": rows, "sections": status}


# --- the whole report


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    num_images: int = 64,
    split: str = "validation",
    seed: int = 0,
    judge_path: str | Path | None = None,
    probe_images: int = 256,
    single_tokens: bool = True,
    lpips: Any = "auto",
    inception: Any = "auto",
    rerun_chat: bool = False,
    chat_dialogues: int = 8,
    chat_pin_identity: Sequence[int] | None = None,
    baseline_fit_images: int = 3000,
    strict: bool = False,
) -> dict:
    """Evaluate whatever `run_dir` holds; write report.json, report.html and the PNGs to
    `out_dir` (default RUN/report). Returns the report (what report.json holds).

    num_images: held-out chat-world pictures (`split`, from index 0 of world `seed`) for
    reconstruction, ordering and codebook; probe_images: train-split pictures the linear
    probes are fitted on (0: no probes); judge_path: default RUN/judge; lpips / inception:
    "auto" (default places), a path (inception), or None (skip); rerun_chat: evaluate
    RUN/sft/model afresh instead of reading RUN/sft/chat_eval.json; chat_pin_identity: [START,
    STOP] token positions (the person's, for a tokenizer trained with them) with which
    RUN/sft/model is evaluated again, pinned to a reference (`chat_section`); baseline_fit_images:
    train-split pictures the PCA baselines are fitted on (0: no baselines); strict: a failing
    section raises instead of being recorded as an error. The judge scores nothing unless it
    passes its gate (`svq.eval.gate`) at the tokenizer's picture size (section "judge").
    """
    started = time.perf_counter()
    if chat_pin_identity is not None and len(chat_pin_identity) != 2:
        raise ValueError(f"chat_pin_identity is [START, STOP], got {chat_pin_identity}")
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    out = Path(out_dir) if out_dir is not None else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def section(name: str, fn: Callable[[], dict]) -> None:
        t0 = time.perf_counter()
        try:
            sections[name] = fn()
        except NotRun as reason:
            sections[name] = not_run(str(reason))
        except Exception as error:
            if strict:
                raise
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            sections[name] = {"status": "error", "reason": detail}
        timings[name] = round(time.perf_counter() - t0, 2)

    judge, judge_note = find_judge(run, judge_path)
    loaded_judge = judge  # a chat re-run applies the gate at its own picture size
    model, images, labels, model_note = None, None, None, ""
    try:
        folder = tokenizer_folder(run)
        model = StyledVAEVQ.load(folder, spatial_vq=run / "vq" / "model")
        images, labels = world_images(num_images, model.config.image_size, split, seed)
    except (NotRun, FileNotFoundError) as reason:
        model_note = str(reason)
    gate, why_no_judge = None, judge_note
    if judge is not None:  # the gate at the report's picture size decides what is judged
        gate = judge_gate(judge, model.config.image_size if model else judge.config.image_size)
        if not gate.passed:
            judge, why_no_judge = None, gate.reason

    def need_model() -> None:
        if model is None:
            raise NotRun(model_note)

    def recon() -> dict:
        need_model()
        result = reconstruction_section(model, images, labels, judge, out, lpips, inception)
        if judge is None:  # say why: no judge, or one that failed its gate
            result["judge"] = {"skipped": why_no_judge}
        else:
            result["judge"]["gate"] = gate.accuracy  # its own accuracy on clean renders
        return {"model": str(folder), **result}

    def baselines() -> dict:
        need_model()
        bits = None
        if getattr(model, "codebook", None) is not None:
            bits = int(model.config.num_tokens * math.log2(model.codebook.config.num_codes))
        return baselines_section(model, images, baseline_fit_images, bits)

    def ordering() -> dict:
        need_model()
        return ordering_section(
            model, images, labels, judge, out, probe_images, single_tokens, seed
        )

    def codebook() -> dict:
        need_model()
        return codebook_section(model, images, out)

    section("judge", lambda: judge_section(judge_note, gate))
    section("training", lambda: training_section(run, out))
    section("reconstruction", recon)
    section("ordering", ordering)
    section("codebook", codebook)
    section("baselines", baselines)
    section("spatial_vq", lambda: spatial_vq_section(run, out, num_images, split, seed))
    pins = None if chat_pin_identity is None else range(*chat_pin_identity)
    section(
        "chat",
        lambda: chat_section(
            run,
            out,
            loaded_judge,
            rerun=rerun_chat,
            num_dialogues=chat_dialogues,
            pin_identity=pins,
        ),
    )
    sections = {"summary": summary_section(sections), **sections}
    report = {
        "run_dir": str(run),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "num_images": num_images,
            "split": split,
            "seed": seed,
            "probe_images": probe_images,
            "chat_pin_identity": chat_pin_identity,
            "judge": judge_note,
            "judge_gate": None if gate is None else gate.reason,
        },
        "sections": sections,
        "seconds": timings,
    }
    report = jsonable(report)
    report["seconds"]["total"] = round(time.perf_counter() - started, 2)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.html").write_text(render_html(report, out))
    return report
