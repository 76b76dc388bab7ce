"""report.json -> one self-contained HTML page: inline CSS, every picture a base64 data URI,
no script and nothing fetched. `render_html(report, folder)` reads the PNGs the report names
from `folder` (and chat pictures from the chat evaluation's folder)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

TITLES = {
    "summary": "Summary",
    "judge": "Judge gate",
    "training": "Training",
    "reconstruction": "Reconstruction",
    "ordering": "Token ordering",
    "codebook": "Codebook",
    "baselines": "Trivial baselines",
    "spatial_vq": "Spatial VQ",
    "chat": "Chat",
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em;
       color: #222; }
nav a { margin-right: 1em; }
section { border-top: 1px solid #ccc; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.not-run { color: #777; font-style: italic; }
.error { color: #b00; }
.note { color: #555; font-size: 0.85em; }
img { max-width: 100%; image-rendering: pixelated; }
figure { margin: 0.6em 0; }
figcaption { font-size: 0.8em; color: #555; }
.transcript { border: 1px solid #ddd; border-radius: 8px; padding: 0.5em; margin: 0.8em 0;
              max-width: 700px; }
.msg { border-radius: 12px; padding: 0.4em 0.8em; margin: 0.3em 0; max-width: 80%; }
.msg.user { background: #e8eefc; margin-right: auto; }
.msg.assistant { background: #eaf6e9; margin-left: auto; }
.msg img { width: 128px; margin: 0.2em; border-radius: 4px; }
.role { font-size: 0.7em; color: #666; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any) -> str:
    """Numbers with 4 significant digits, None as a dash, anything else escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return esc(value)


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def image(path: Path, caption: str = "", alt: str = "") -> str:
    uri = data_uri(path)
    if uri is None:
        return f'<p class="not-run">missing picture {esc(path.name)}</p>'
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt or caption)}">{cap}</figure>'


def scalars(tree: dict) -> list[tuple[str, Any]]:
    """The (key, value) pairs of a dict whose values are plain numbers or strings."""
    return [(k, v) for k, v in tree.items() if isinstance(v, int | float | str | type(None))]


def attribute_table(columns: dict[str, dict]) -> str:
    """{column: {attribute: value}} -> one row per attribute."""
    columns = {k: v for k, v in columns.items() if isinstance(v, dict)}
    if not columns:
        return ""
    attributes = list(next(iter(columns.values())))
    rows = [[a, *(columns[c].get(a) for c in columns)] for a in attributes]
    return table(["attribute", *columns], rows)


# --- sections


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def with_ci(figure: dict | None, key: str = "value", ci: str = "ci") -> str:
    """ "36.4% [28.1, 44.0]": a figure with its 95% interval (percent)."""
    if not isinstance(figure, dict) or figure.get(key) is None:
        return "–"
    interval = figure.get(ci)
    tail = f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else ""
    return pct(figure[key]) + tail


def judge_gate(s: dict, folder: Path) -> str:
    verdict = "passed" if s.get("passed") else "FAILED: judged figures are refused"
    parts = [
        f"<p><b>{esc(verdict)}</b>. {esc(s.get('reason', ''))}</p>",
        f"<p class='note'>judge {esc(s.get('source', ''))}; every judged figure in this "
        "report is read by it, and its accuracy on clean renders stands beside them</p>",
    ]
    rows = [(a, pct(v)) for a, v in s.get("accuracy", {}).items()]
    parts.append(table(["attribute", f"clean {s.get('image_size')} px renders"], rows))
    return "".join(parts)


def baselines(s: dict, folder: Path) -> str:
    rows = [
        (r["name"], f"{r['psnr']:.2f} ± {r['psnr_se']:.2f}", r.get("floats"), r.get("bits"))
        for r in s.get("rows", [])
    ]
    note = (
        f"<p class='note'>{fmt(s.get('n_images'))} held-out pictures (the reconstruction's); "
        f"PCA fitted on {fmt(s.get('fit_images'))} train pictures; {esc(s.get('resampling'))}. "
        "Compare with the tokenizer's PSNR in the reconstruction section.</p>"
    )
    return note + table(["baseline", "PSNR (dB)", "floats", "bits"], rows)


def summary(s: dict, folder: Path) -> str:
    rows = [(r["label"], r["value"], r["unit"], r["section"]) for r in s.get("headline", [])]
    parts = [table(["", "value", "unit", "section"], rows) if rows else ""]
    states = [(TITLES.get(k, k), v) for k, v in s.get("sections", {}).items()]
    parts.append(table(["section", "status"], states))
    return "".join(parts)


def training(s: dict, folder: Path) -> str:
    parts = []
    for stage, summ in s.get("stages", {}).items():
        parts.append(f"<h3>{esc(stage)}</h3>" + table(["", ""], scalars(summ)))
    if "judge" in s:
        j = s["judge"]
        parts.append(
            f"<h3>judge</h3><p class='note'>{fmt(j.get('steps'))} steps, "
            f"{fmt(j.get('minutes'))} minutes; accuracy on clean renders</p>"
        )
        parts.append(attribute_table(j.get("accuracy", {})))
    if s.get("plot"):
        parts.append(image(folder / s["plot"], "stage 1 validation: PSNR and SSIM by step"))
    if s.get("validation"):
        rows = [(r["step"], r.get("psnr"), r.get("ssim")) for r in s["validation"]]
        parts.append(table(["step", "PSNR (dB)", "SSIM"], rows))
    return "".join(parts)


def reconstruction(s: dict, folder: Path) -> str:
    parts = [f"<p class='note'>{fmt(s.get('n_images'))} held-out pictures at "
             f"{fmt(s.get('image_size'))} px; model {esc(s.get('model', ''))}</p>"]  # fmt: skip
    rows = []
    for kind in ("continuous", "quantised"):
        row = s.get(kind, {})
        if "skipped" in row:
            rows.append((kind, "skipped: " + row["skipped"], None, None, None))
        else:
            rows.append((kind, row.get("psnr"), row.get("ssim"), row.get("lpips"), row.get("rfid")))
    parts.append(table(["tokens", "PSNR (dB)", "SSIM", "LPIPS", "rFID"], rows))
    if s.get("gap_db") is not None:
        parts.append(f"<p>quantisation costs {fmt(s['gap_db'])} dB PSNR</p>")
    for note in s.get("notes", {}).values():
        parts.append(f"<p class='note'>{esc(note)}</p>")
    judge = s.get("judge", {})
    if "skipped" in judge:
        parts.append(f"<p class='not-run'>judge: {esc(judge['skipped'])}</p>")
    else:
        parts.append("<h3>Which attributes survive tokenization (judge accuracy)</h3>")
        columns = {k: v for k, v in judge.items() if k != "mean"}
        parts.append(attribute_table(columns))
        parts.append(
            table(
                ["mean over attributes", *judge.get("mean", {})],
                [["", *judge.get("mean", {}).values()]],
            )
        )
    if s.get("grid"):
        rows_named = ", ".join(s.get("grid_rows", []))
        parts.append(image(folder / s["grid"], f"rows, top to bottom: {rows_named}"))
    return "".join(parts)


def ordering(s: dict, folder: Path) -> str:
    parts = []
    if s.get("prefix_plot"):
        parts.append(image(folder / s["prefix_plot"], "quality vs leading tokens kept"))
    prefix = s.get("prefix", [])
    parts.append(
        f"<p>tokens for 90% of the PSNR gain: {fmt(s.get('k_for_90pct_gain'))} of "
        f"{fmt(s.get('num_tokens'))}</p>"
    )
    parts.append(
        table(
            ["k", "PSNR (dB)", "± se", "SSIM", "judge (mean)"],
            [
                (r["k"], r["psnr"], r.get("psnr_se"), r.get("ssim"), r.get("judge_mean"))
                for r in prefix
            ],
        )
    )
    if s.get("ablation_plot"):
        parts.append(image(folder / s["ablation_plot"], "PSNR drop when tokens are swapped"))
    groups = s.get("groups") or []
    parts.append(
        table(
            ["tokens swapped", "PSNR (dB)", "drop (dB)", "± se"],
            [
                (f"{g['start']}-{g['end'] - 1}", g["psnr"], g["drop_db"], g["drop_se"])
                for g in groups
            ],
        )
    )
    probes = s.get("probes", {})
    if "skipped" in probes:
        parts.append(f"<p class='not-run'>probes: {esc(probes['skipped'])}</p>")
    elif probes:
        if s.get("probe_plot"):
            parts.append(image(folder / s["probe_plot"], "per-token linear probe accuracy"))
        best = probes.get("best_token", {})
        base = dict(zip(probes.get("attributes", []), probes.get("baseline", []), strict=False))
        acc = probes.get("accuracy", [])
        parts.append(
            table(
                ["attribute", "best token", "its accuracy", "majority baseline"],
                [
                    (a, t, acc[t][i] if t < len(acc) else None, base.get(a))
                    for i, (a, t) in enumerate(best.items())
                ],
            )
        )
    swap = s.get("swap_test", {})
    if "skipped" in swap:
        parts.append(f"<p class='not-run'>token-swap test: {esc(swap['skipped'])}</p>")
    elif swap:
        parts.append("<h3>Token-swap test: changed / adopted (%)</h3>")
        rows = []
        for name, changed, adopted in zip(
            swap["groups"], swap["changed"], swap["adopted"], strict=True
        ):
            cells = [
                f"{100 * c:.0f} / " + ("-" if d is None else f"{100 * d:.0f}")
                for c, d in zip(changed, adopted, strict=True)
            ]
            rows.append([name, *cells])
        parts.append(table(["tokens", *swap["attributes"]], rows))
    return "".join(parts)


def codebook(s: dict, folder: Path) -> str:
    o = s.get("overall", {})
    rows = [
        ("codes", s.get("num_codes")),
        ("used", o.get("used")),
        ("dead", o.get("dead")),
        ("usage", o.get("usage")),
        ("perplexity", o.get("perplexity")),
        ("codes shared by positions", s.get("shared_codes")),
        ("relative quantisation error", s.get("quantization_error")),
        ("re-encode stability, tokens", s.get("stability", {}).get("tokens")),
        ("re-encode stability, sequences", s.get("stability", {}).get("sequences")),
    ]
    parts = [table(["", ""], rows)]
    if s.get("plot"):
        parts.append(image(folder / s["plot"], "codes used and perplexity per position"))
    pp = s.get("per_position", {})
    if pp:
        n = len(pp.get("used", []))
        parts.append(
            table(
                ["position", "used", "dead", "perplexity", "stable"],
                [
                    (p, pp["used"][p], pp["dead"][p], pp["perplexity"][p], pp["stable"][p])
                    for p in range(n)
                ],
            )
        )
    return "".join(parts)


def spatial_vq(s: dict, folder: Path) -> str:
    keys = (
        "n_images",
        "image_size",
        "psnr",
        "ssim",
        "codes_used",
        "codebook_size",
        "usage",
        "perplexity",
    )
    parts = [table(["", ""], [(k, s.get(k)) for k in keys])]
    if s.get("grid"):
        parts.append(image(folder / s["grid"], "originals (top), spatial VQ reconstructions"))
    return "".join(parts)


def _chat_routes(s: dict) -> dict[str, dict]:
    routes = {"model": s}
    if s.get("pinned"):
        routes["model, person's tokens pinned"] = s["pinned"]
    if s.get("baseline"):
        routes["baseline"] = s["baseline"]
    return routes


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _chat_tables(s: dict) -> str:
    """The chat figures of each route with intervals, chance levels and controls."""
    routes = _chat_routes(s)
    judge = s.get("judge") or {}
    parts = [f"<p class='note'>judge: {esc(judge.get('reason', 'not recorded'))}</p>"]

    def row(label: str, cell) -> list:
        return [label, *(cell(r) for r in routes.values())]

    following = lambda r: r.get("generation_following") or {}  # noqa: E731
    identity = lambda r, k: _get(r, "identity_consistency", k)  # noqa: E731
    rows = [
        row("dialogues", lambda r: r.get("dialogues")),
        row("pictures drawn when asked", lambda r: with_ci(r.get("pictures_drawn"))),
        row("following (mean over attributes, pictures drawn)",
            lambda r: with_ci(following(r), "mean")),
        row("  chance level", lambda r: pct(following(r).get("chance"))),
        row("  one constant picture", lambda r: pct(following(r).get("best_constant"))),
        row("  counting undrawn as wrong",
            lambda r: with_ci(following(r).get("mean_all_requests"))),
        row("identity within a dialogue, control-corrected",
            lambda r: with_ci(identity(r, "within_dialogue"))),
        row("  raw agreement / across personas (control)",
            lambda r: f"{pct(_get(identity(r, 'within_dialogue'), 'raw'))} / "
                      f"{pct(_get(identity(r, 'within_dialogue'), 'control'))}"),
        row("identity vs the persona, control-corrected",
            lambda r: with_ci(identity(r, "vs_persona"))),
        row("  raw match / other personas (control)",
            lambda r: f"{pct(_get(identity(r, 'vs_persona'), 'raw'))} / "
                      f"{pct(_get(identity(r, 'vs_persona'), 'control'))}"),
        row("distinct id sequences / pictures", lambda r: pct(_get(r, "diversity",
                                                                    "distinct_id_sequences"))),
        row("distinct judge readings / pictures", lambda r: pct(_get(r, "diversity",
                                                                      "distinct_readings"))),
        row("understanding", lambda r: with_ci(r.get("understanding"), "accuracy")),
        row("  blind majority answer", lambda r: with_ci(r.get("understanding"),
                                                         "blind_majority", "blind_majority_ci")),
        row("image-token validity", lambda r: pct(r.get("image_token_validity"))),
    ]  # fmt: skip
    parts.append(table(["", *routes], rows))
    gate = judge.get("accuracy", {})
    per = {name: following(r).get("per_attribute") or {} for name, r in routes.items()}
    attributes = list(dict.fromkeys(a for p in per.values() for a in p))
    if attributes:
        parts.append("<h3>Following, per attribute</h3>")
        rows = [
            [a, *(with_ci(per[name].get(a)) for name in routes),
             pct(per["model"].get(a, {}).get("chance")),
             pct(per["model"].get(a, {}).get("best_constant")), pct(gate.get(a))]
            for a in attributes
        ]  # fmt: skip
        header = ["attribute", *routes, "chance", "one constant picture", "judge on clean"]
        parts.append(table(header, rows))
    elif s.get("generation_following") is None:
        parts.append("<p class='not-run'>following: not measured (see the judge line)</p>")
    per_id = {name: _get(identity(r, "within_dialogue"), "per_attribute") or {}
              for name, r in routes.items()}  # fmt: skip
    if per_id["model"]:
        parts.append("<h3>Identity within a dialogue, per attribute (corrected)</h3>")
        rows = [[a, *(pct(_get(per_id[n], a, "corrected")) for n in routes), pct(gate.get(a))]
                for a in per_id["model"]]  # fmt: skip
        parts.append(table(["attribute", *routes, "judge on clean"], rows))
    questions = _get(s, "understanding", "per_question") or {}
    if questions:
        parts.append("<h3>Understanding, per question</h3>")
        rows = [[q, pct(v.get("accuracy")), pct(v.get("blind_majority")), v.get("n")]
                for q, v in questions.items()]  # fmt: skip
        parts.append(table(["question", "accuracy", "blind majority", "n"], rows))
    return "".join(parts)


def chat(s: dict, folder: Path) -> str:
    base_dir = Path(s.get("base_dir", folder))
    parts = [f"<p class='note'>from {esc(s.get('source', ''))}</p>", _chat_tables(s)]
    transcripts = s.get("transcripts") or []
    if transcripts:
        parts.append("<h3>Example conversations</h3>")
    for t in transcripts:
        bubbles = []
        for m in t.get("messages", []):
            role = m.get("role", "user")
            pictures = "".join(
                f'<img src="{uri}" alt="picture">'
                if (uri := data_uri(base_dir / p)) is not None
                else f'<span class="not-run">[missing picture {esc(p)}]</span>'
                for p in m.get("images", [])
            )
            text = esc(m.get("text", "")).replace("\n", "<br>")
            bubbles.append(
                f'<div class="msg {esc(role)}"><div class="role">{esc(role)}</div>'
                f"{text}<div>{pictures}</div></div>"
            )
        parts.append(
            f'<div class="transcript" id="dialogue-{esc(t.get("id", ""))}">'
            f"<div class='role'>dialogue {esc(t.get('id', ''))}</div>{''.join(bubbles)}</div>"
        )
    return "".join(parts)


RENDERERS = {
    "summary": summary,
    "judge": judge_gate,
    "baselines": baselines,
    "training": training,
    "reconstruction": reconstruction,
    "ordering": ordering,
    "codebook": codebook,
    "spatial_vq": spatial_vq,
    "chat": chat,
}


def render_section(name: str, s: dict, folder: Path) -> str:
    status = s.get("status", "not run")
    if status == "ok":
        body = RENDERERS[name](s, folder)
    elif status == "error":
        body = f"<p class='error'>failed: {esc(s.get('reason', ''))}</p>"
    else:
        body = f"<p class='not-run'>not run: {esc(s.get('reason', ''))}</p>"
    title = TITLES.get(name, name)
    return (
        f'<section id="{esc(name)}" data-status="{esc(status)}">'
        f"<h2>{esc(title)}</h2>{body}</section>"
    )


def render_html(report: dict, folder: str | Path) -> str:
    """The page for `report` (build_report's dict); PNGs are read from `folder`."""
    folder = Path(folder)
    sections = report.get("sections", {})
    nav = " ".join(f'<a href="#{esc(n)}">{esc(TITLES.get(n, n))}</a>' for n in sections)
    body = "".join(render_section(n, s, folder) for n, s in sections.items())
    settings = table(["setting", "value"], scalars(report.get("settings", {})))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>svq report: {esc(report.get('run_dir', ''))}</title><style>{CSS}</style></head>"
        f"<body><h1>svq report</h1><p class='note'>run {esc(report.get('run_dir', ''))}, "
        f"{esc(report.get('created', ''))}</p><nav>{nav}</nav>{settings}{body}</body></html>\n"
    )
