"""What a demo run measured, in one JSON record: the figures a reader cites, with the settings,
commit, machine and wall time per stage that produced them.

    record = demo_record(Path("runs/demo"), "quick", minutes=12.3)
    # svq demo --record benchmarks/results/demo_quick.json  writes it there too

The figures come from RUN/report/report.json (the eval suite), stage 2's before and after its
decoder fine-tune from RUN/stage2/summary.json, and each stage's wall time from
RUN/timings/<stage>.json (written by `svq demo` when a stage finishes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .provenance import REPO, provenance


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def chat_figures(chat: dict) -> dict[str, Any]:
    """The cited chat figures of one route (the svq route or the serial baseline)."""
    following = chat.get("generation_following") or {}
    identity = chat.get("identity_consistency") or {}
    understanding = chat.get("understanding") or {}
    replies = chat.get("replies") or {}
    return {
        "dialogues": chat.get("dialogues"),
        "judge": _get(chat, "judge", "status"),
        "following": {k: following.get(k) for k in ("mean", "ci", "chance", "best_constant")},
        "following_per_attribute": following.get("per_attribute"),
        "following_counting_undrawn_as_wrong": following.get("mean_all_requests"),
        "pictures_drawn": chat.get("pictures_drawn"),
        "identity_within_dialogue": {
            k: _get(identity, "within_dialogue", k) for k in ("value", "ci", "raw", "control")
        },
        "identity_vs_persona": {
            k: _get(identity, "vs_persona", k) for k in ("value", "ci", "raw", "control")
        },
        "diversity": chat.get("diversity"),
        "understanding": {
            k: understanding.get(k)
            for k in ("accuracy", "ci", "blind_majority", "blind_majority_ci", "n", "per_question")
        },
        "image_token_validity": chat.get("image_token_validity"),
        "replies": {
            "well_formed": replies.get("well_formed"),
            "on_form": replies.get("on_form"),
            "text_following": {
                k: _get(replies, "text_following", k) for k in ("mean", "ci", "chance")
            },
            "picture_vs_text": {
                k: _get(replies, "picture_vs_text", k) for k in ("value", "ci", "chance")
            },
        },
    }


def report_figures(report: dict) -> dict[str, Any]:
    """The cited figures of a report.json."""
    s = report["sections"]
    rec, codebook, chat = s.get("reconstruction", {}), s.get("codebook", {}), s.get("chat", {})
    judge = s.get("judge", {})
    prefix = _get(s, "ordering", "prefix") or []
    return {
        "judge_gate": {
            "passed": judge.get("passed"),
            "image_size": judge.get("image_size"),
            "n_images": judge.get("n_images"),
            "lowest": min(judge["accuracy"].values()) if judge.get("accuracy") else None,
            "accuracy": judge.get("accuracy"),
        },
        "reconstruction": {
            "n_images": rec.get("n_images"),
            "psnr_continuous": _get(rec, "continuous", "psnr"),
            "psnr_ids": _get(rec, "quantised", "psnr"),
            "ssim_ids": _get(rec, "quantised", "ssim"),
            "gap_db": rec.get("gap_db"),
            "judge_on_ids": _get(rec, "judge", "quantised"),
            "judge_on_ids_mean": _get(rec, "judge", "mean", "quantised"),
            "judge_on_originals_mean": _get(rec, "judge", "mean", "originals"),
        },
        "trivial_baselines": {r["name"]: r["psnr"] for r in _get(s, "baselines", "rows") or []},
        "ordering_prefix_psnr": {r["k"]: r["psnr"] for r in prefix},
        "codebook": {
            "num_codes": codebook.get("num_codes"),
            "pooled_used": _get(codebook, "overall", "used"),
            "pooled_perplexity": _get(codebook, "overall", "perplexity"),
            "per_position": codebook.get("per_position_summary"),
            "bits_per_image": codebook.get("bits_per_image"),
        },
        "chat": chat_figures(chat) if chat.get("status") == "ok" else None,
        "chat_baseline": chat_figures(chat["baseline"]) if chat.get("baseline") else None,
        "chat_pinned": chat_figures(chat["pinned"]) if chat.get("pinned") else None,
    }


def stage2_validation(run: Path) -> dict[str, dict[str, float]] | None:
    """PSNR on stage 2's own validation pictures, continuous and from the ids, before and after
    its decoder fine-tune (RUN/stage2/summary.json); None without it."""
    path = run / "stage2" / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return {
        when: {
            "psnr_continuous": _get(summary, when, "continuous_psnr"),
            "psnr_ids": _get(summary, when, "quantized_psnr"),
        }
        for when in ("before", "after")
        if summary.get(when)
    }


def stage_seconds(run: Path) -> dict[str, float]:
    """Wall seconds of each stage that ran in this run folder (RUN/timings/<stage>.json)."""
    folder = run / "timings"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text())["seconds"] for p in sorted(folder.glob("*.json"))}


def demo_record(
    run: Path,
    budget: str,
    minutes: float,
    options: dict,
    reused: list[str] | None = None,
    pipeline_minutes: float | None = None,
) -> dict[str, Any]:
    """The whole record of a finished demo run (see the module docstring); `reused`: the
    stages an earlier invocation finished (their stage_seconds are that invocation's);
    `pipeline_minutes`: the whole pipeline's wall time from the stage times."""
    report = json.loads((run / "report" / "report.json").read_text())
    return {
        "budget": budget,
        **provenance(),
        "wall_minutes": minutes,
        "pipeline_minutes": pipeline_minutes,
        "reused_stages": list(reused or []),
        "stage_seconds": stage_seconds(run),
        "figures": report_figures(report),
        "stage2_validation": stage2_validation(run),
        "settings": options,
    }


# --- the README's tables, generated from the recorded runs -------------------------------------

README_START = "<!-- demo tables: generated by `python -m svq.demo_record`; do not edit -->"
README_END = "<!-- end of demo tables -->"
RECORDS = REPO / "benchmarks" / "results"


def _pct(figure: dict | None, key: str = "value", ci: str | None = "ci") -> str:
    if not figure or figure.get(key) is None:
        return "not measured"
    interval = figure.get(ci) if ci else None
    tail = f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else ""
    return f"{100 * figure[key]:.1f}%{tail}"


def _db(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} dB"


def _minutes(record: dict) -> str:
    """The wall time; for a run that reused earlier stages, the whole pipeline's from its
    stage times, with this invocation's beside it."""
    if not record.get("reused_stages") or record.get("pipeline_minutes") is None:
        return str(record["wall_minutes"])
    return f"{record['pipeline_minutes']} from stage times ({record['wall_minutes']} this run)"


def readme_tables(records: dict[str, dict]) -> str:
    """Markdown tables of the recorded demo runs ({budget: record}), for the README."""
    budgets = list(records)
    figures = {b: records[b]["figures"] for b in budgets}
    header = "| | " + " | ".join(budgets) + " |\n|---" + "|---" * len(budgets) + "|\n"

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(b) for b in budgets) + " |\n"

    rec = lambda b: figures[b]["reconstruction"]  # noqa: E731
    base = lambda b, name: figures[b]["trivial_baselines"].get(name)  # noqa: E731
    gate = lambda b: figures[b]["judge_gate"]  # noqa: E731
    bits = lambda b: figures[b]["codebook"]["bits_per_image"] or {}  # noqa: E731
    pca = lambda b, tail: next((v for k, v in figures[b]["trivial_baselines"].items()  # noqa: E731
                                if k.endswith(tail)), None)  # fmt: skip
    tokenizer = header + "".join([
        row("wall time (min) / commit", lambda b: f"{_minutes(records[b])} / "
            f"{(records[b]['commit'] or '?')[:7]}"),
        row("judge gate (lowest attribute on clean renders)",
            lambda b: f"{'passed' if gate(b)['passed'] else 'FAILED'} "
                      f"({_pct(gate(b), 'lowest')}, {gate(b)['image_size']} px)"),
        row("PSNR from the 36 ids / continuous", lambda b: f"{_db(rec(b)['psnr_ids'])} / "
            f"{_db(rec(b)['psnr_continuous'])}"),
        row("mean picture / 8x8 thumbnail", lambda b: f"{_db(base(b, 'mean picture'))} / "
            f"{_db(base(b, 'thumbnail 8x8'))}"),
        row("pixel PCA, 36 x E floats / the ids' bits", lambda b: f"{_db(pca(b, 'floats)'))} / "
            f"{_db(pca(b, 'bits)'))}"),
        row("judge on id reconstructions (mean) / on originals",
            lambda b: f"{_pct(rec(b), 'judge_on_ids_mean')} / "
                      f"{_pct(rec(b), 'judge_on_originals_mean')}"),
        row("bits per picture the ids carry (of nominal)",
            lambda b: f"{bits(b).get('carried', 0):.0f} of {bits(b).get('nominal', 0):.0f}"),
    ])  # fmt: skip
    chat_header = "| | " + " | ".join(f"{b}: svq | {b}: serial baseline" for b in budgets)
    chat_header += " |\n|---" + "|---" * (2 * len(budgets)) + "|\n"

    def chat_row(label: str, cell) -> str:
        cells = []
        for b in budgets:
            for route in ("chat", "chat_baseline"):
                cells.append(cell(figures[b][route] or {}))
        return f"| {label} | " + " | ".join(cells) + " |\n"

    def pinned_row(label: str, cell) -> str:  # the svq route pinned; the baseline has no pins
        cells = []
        for b in budgets:
            pinned = figures[b].get("chat_pinned")
            cells += [cell(pinned) if pinned else "—", "—"]
        if not any(figures[b].get("chat_pinned") for b in budgets):
            return ""  # no recorded run measured it
        return f"| {label} | " + " | ".join(cells) + " |\n"

    f = lambda c: c.get("following") or {}  # noqa: E731
    said = lambda c, k: (c.get("replies") or {}).get(k)  # noqa: E731
    chat = chat_header + "".join([
        chat_row("dialogues", lambda c: str(c.get("dialogues"))),
        chat_row("pictures drawn when asked", lambda c: _pct(c.get("pictures_drawn"))),
        chat_row("following the request (pictures drawn)", lambda c: _pct(f(c), "mean")),
        chat_row("&nbsp;&nbsp;chance / one constant picture",
                 lambda c: f"{_pct(f(c), 'chance', None)} / "
                          f"{_pct(f(c), 'best_constant', None)}"),
        chat_row("identity within a dialogue, control-corrected",
                 lambda c: _pct(c.get("identity_within_dialogue"))),
        chat_row("identity vs the persona, control-corrected",
                 lambda c: _pct(c.get("identity_vs_persona"))),
        pinned_row("&nbsp;&nbsp;the person's tokens pinned to a reference: within / vs persona",
                   lambda c: f"{_pct(c.get('identity_within_dialogue'))} / "
                             f"{_pct(c.get('identity_vs_persona'))}"),
        pinned_row("&nbsp;&nbsp;the person's tokens pinned: following",
                   lambda c: _pct(f(c), "mean")),
        chat_row("distinct id sequences / pictures",
                 lambda c: _pct(c.get("diversity"), "distinct_id_sequences")),
        chat_row("understanding", lambda c: _pct(c.get("understanding"), "accuracy")),
        chat_row("&nbsp;&nbsp;blind majority answer",
                 lambda c: _pct(c.get("understanding"), "blind_majority", "blind_majority_ci")),
        chat_row("replies well formed (the world's grammar)",
                 lambda c: _pct(said(c, "well_formed"))),
        chat_row("request stated in the reply's words",
                 lambda c: _pct(said(c, "text_following"), "mean")),
        chat_row("picture agrees with its words", lambda c: _pct(said(c, "picture_vs_text"))),
    ])  # fmt: skip
    return f"{README_START}\n{tokenizer}\n{chat}{README_END}"


def load_records(folder: Path = RECORDS) -> dict[str, dict]:
    """The recorded demo runs: benchmarks/results/demo_<budget>.json that exist."""
    out = {}
    for budget in ("quick", "standard"):
        path = folder / f"demo_{budget}.json"
        if path.is_file():
            out[budget] = json.loads(path.read_text())
    return out


def update_readme(readme: Path = REPO / "README.md", folder: Path = RECORDS) -> bool:
    """Rewrite the README's block of demo tables from the records; True when it changed."""
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    new = text[:start] + readme_tables(load_records(folder)) + text[end:]
    readme.write_text(new)
    return new != text


if __name__ == "__main__":
    print("README.md", "updated" if update_readme() else "already up to date")
