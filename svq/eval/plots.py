"""The eval suite's plots, as PNG files (matplotlib, Agg canvas: no display, no pyplot state).

Each function takes the JSON-ready rows the eval modules return and a path, writes one PNG and
returns its path:

    prefix_plot(rows, "prefix.png")              # PSNR (and judge accuracy) vs tokens kept, k
    ablation_plot(groups, singles, "abl.png")    # PSNR drop per swapped group / single token
    probe_heatmap(accuracy, attributes, "p.png") # per-token linear probe accuracy (N x A)
    training_plot(records, "training.png")       # validation PSNR / SSIM over training steps
    usage_plot(per_position, "usage.png")        # codes used and perplexity per token position
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def _figure(width: float = 6.4, height: float = 3.6) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def prefix_plot(rows: Sequence[dict], path: str | Path, title: str = "prefix curve") -> Path:
    """rows: {k, psnr, psnr_se?, judge_mean?} per prefix length k -> PSNR vs k (with one
    standard error) and, when the rows have it, the judge's mean accuracy on a second axis."""
    figure = _figure()
    ax = figure.add_subplot()
    ks = [r["k"] for r in rows]
    values = [r["psnr"] for r in rows]
    ax.plot(ks, values, "o-", color="tab:blue", markersize=3, label="PSNR")
    if all(r.get("psnr_se") is not None for r in rows):
        se = [r["psnr_se"] for r in rows]
        lo = [v - s for v, s in zip(values, se, strict=True)]
        hi = [v + s for v, s in zip(values, se, strict=True)]
        ax.fill_between(ks, lo, hi, color="tab:blue", alpha=0.2)
    ax.set_xlabel("leading tokens kept, k")
    ax.set_ylabel("PSNR (dB)", color="tab:blue")
    ax.grid(alpha=0.3)
    if any(r.get("judge_mean") is not None for r in rows):
        twin = ax.twinx()
        judged = [(r["k"], r["judge_mean"]) for r in rows if r.get("judge_mean") is not None]
        twin.plot(*zip(*judged, strict=True), "s--", color="tab:orange", markersize=3)
        twin.set_ylabel("judge accuracy (mean over attributes)", color="tab:orange")
        twin.set_ylim(0, 1)
    ax.set_title(title)
    return _save(figure, path)


def ablation_plot(
    groups: Sequence[dict],
    singles: Sequence[dict] | None,
    path: str | Path,
    title: str = "token ablations (swap with another picture)",
) -> Path:
    """groups: {start, end, drop_db, drop_se} rows (svq.eval.ordering.group_ablation); singles:
    {token, drop_db, drop_se} rows or None. Bars of the PSNR drop with one standard error."""
    panels = 2 if singles else 1
    figure = _figure(6.4 + 3.2 * (panels - 1), 3.6)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    names = [f"{g['start']}-{g['end'] - 1}" for g in groups]
    axes[0].bar(
        names,
        [g["drop_db"] for g in groups],
        yerr=[g.get("drop_se") or 0 for g in groups],
        color="tab:red",
    )
    axes[0].set_xlabel("tokens replaced")
    axes[0].set_ylabel("PSNR drop (dB)")
    axes[0].tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0].set_title("groups", fontsize=9)
    if singles:
        axes[1].bar(
            [s["token"] for s in singles],
            [s["drop_db"] for s in singles],
            yerr=[s.get("drop_se") or 0 for s in singles],
            color="tab:purple",
        )
        axes[1].set_xlabel("token")
        axes[1].set_title("single tokens", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def probe_heatmap(
    accuracy: Sequence[Sequence[float]],
    attributes: Sequence[str],
    path: str | Path,
    title: str = "per-token linear probes (held-out accuracy)",
) -> Path:
    """accuracy: (N tokens) x (A attributes) values in [0, 1] -> a heat map, tokens down."""
    n = len(accuracy)
    figure = _figure(1.2 + 0.45 * len(attributes), 1.6 + 0.16 * n)
    ax = figure.add_subplot()
    image = ax.imshow(accuracy, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(attributes)), list(attributes), rotation=60, fontsize=7, ha="right")
    ax.set_yticks(range(n), [str(i) for i in range(n)], fontsize=6)
    ax.set_ylabel("token")
    figure.colorbar(image, ax=ax, label="accuracy")
    ax.set_title(title, fontsize=9)
    return _save(figure, path)


def training_plot(
    records: Sequence[dict], path: str | Path, title: str = "stage 1 validation"
) -> Path:
    """records: validation.jsonl rows {step, psnr, ssim, ...} -> PSNR and SSIM vs step."""
    figure = _figure()
    ax = figure.add_subplot()
    steps = [r["step"] for r in records]
    ax.plot(steps, [r.get("psnr") for r in records], "o-", color="tab:blue", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("PSNR (dB)", color="tab:blue")
    ax.grid(alpha=0.3)
    if all(r.get("ssim") is not None for r in records):
        twin = ax.twinx()
        twin.plot(steps, [r["ssim"] for r in records], "s--", color="tab:green", markersize=3)
        twin.set_ylabel("SSIM", color="tab:green")
    ax.set_title(title)
    return _save(figure, path)


def usage_plot(
    used: Sequence[float],
    perplexity: Sequence[float],
    num_codes: int,
    path: str | Path,
    title: str = "codebook use per token position",
) -> Path:
    """Per token position: codes used and the perplexity of their frequencies (of K)."""
    figure = _figure()
    ax = figure.add_subplot()
    positions = range(len(used))
    ax.bar(positions, used, color="tab:blue", alpha=0.6, label="codes used")
    ax.plot(positions, perplexity, "o-", color="tab:orange", markersize=3, label="perplexity")
    ax.axhline(num_codes, color="grey", linestyle=":", label=f"K = {num_codes}")
    ax.set_xlabel("token position")
    ax.set_ylabel("codes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    return _save(figure, path)
