"""Chat figures from per-dialogue records, each with its chance level, its control and a 95%
bootstrap interval over dialogues (`svq.eval.stats`); a single proportion's interval is at least
its Wilson interval, so 0% and 100% keep a width.

    records = [DialogueRecord(...), ...]  # one per evaluated dialogue (chat_eval builds them)
    report = chat_scores(records)             # following, drawn rate, identity, diversity, ...

Why each control is there (a figure without one can be fooled):

- following: the chance level (1 / number of values, per attribute) and `best_constant`, what
  one constant picture would score (the most frequent requested value's share): a collapsed
  model scores about that. Following is scored over the requested pictures that were drawn;
  `pictures_drawn` says how many were, and `mean_all_requests` counts an undrawn one as wrong.
- identity: agreement between a dialogue's pictures (`within_dialogue`) is 100% for a model
  that always draws the same picture. The control is the same agreement between pictures of
  dialogues whose personas differ (`across_personas`); `corrected` = (within - across) /
  (1 - across) per attribute, a kappa: 0 for a constant or a random model, 1 for a model whose
  pictures agree exactly when the persona does. `vs_persona` (pictures matching the persona's
  own look) gets the same correction with the looks of the other dialogues' personas.
- diversity: distinct id sequences and distinct judge readings over the pictures drawn, and
  per requested attribute the distinct values drawn against the distinct values requested.
- replies: `well_formed`, the share of assistant replies whose text reads back entirely as
  sentences of the world's grammar (`svq.data.grammar`); `on_form`, the share whose sentences
  have the forms of the true reply (an answer to the question asked, a photo for a request);
  `text_following`, the request's pinned values that the reply's words state (chance and
  constant as for following); `picture_vs_text`, the judge's reading of each drawn picture
  against what the words before it state (does the picture follow the model's own words?).
- understanding: `blind_majority`, always answering the most frequent true value of each
  question, chosen with hindsight on these very questions (an upper bound for any answerer
  that does not look at the picture).

Intervals resample dialogues (the independent unit). Identity's control pairs a dialogue with
all the others: its interval resamples each dialogue's two agreements, a close approximation.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from svq.data import IDENTITY_ATTRIBUTES, SCHEMA

from .stats import bootstrap_mean_of_ratios, mean_of_ratios, resample_weights, wilson_interval

FOLLOWED = ("place", "season", "activity", "time_of_day")  # attributes a request can pin


@dataclass
class Request:
    """One requested picture: what the talk pinned, and what was drawn."""

    pinned: dict[str, str]  # attribute -> requested value
    drawn: bool  # a picture was generated for it
    judged: dict[str, str] | None = None  # the judge's reading of that picture (None: no judge)
    stated: dict[str, str] | None = None  # what the reply's words state for it (None: not read)
    true_stated: dict[str, str] = field(default_factory=dict)  # what the true reply's words state


@dataclass
class Reply:
    """One assistant reply's text, read back with the world's grammar."""

    well_formed: bool  # every part of it is a sentence of the world
    on_form: bool  # its sentences have the forms of the true reply's
    stated_vs_judged: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    # per drawn and judged picture: (what the words before it state, the judge's reading)


@dataclass
class Answer:
    """One answer to a question about a user photo."""

    topic: str
    truth: str
    correct: bool


@dataclass
class DialogueRecord:
    """Everything scored about one dialogue."""

    persona: dict[str, str]  # identity attribute -> value
    requests: list[Request] = field(default_factory=list)
    pictures: list[dict[str, str]] = field(default_factory=list)  # judged, every one drawn
    ids: list[tuple[int, ...]] = field(default_factory=list)  # each drawn picture's ids
    answers: list[Answer] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)


def _figure(num: np.ndarray, den: np.ndarray, seed: int) -> dict[str, Any]:
    """{"value", "ci", "n"}: the mean over columns of the pooled ratios, its interval, and
    the number of counted items. For one column (a single proportion) the interval is the
    wider of the units' bootstrap and the Wilson interval of the pooled count, so a figure at
    0% or 100% does not claim a zero-width interval."""
    num, den = np.atleast_2d(num.T).T, np.atleast_2d(den.T).T
    ci = bootstrap_mean_of_ratios(num, den, seed=seed)
    if ci is not None and num.shape[1] == 1:
        low, high = wilson_interval(float(num.sum()), float(den.sum()))
        ci = (min(ci[0], low), max(ci[1], high))
    return {"value": mean_of_ratios(num, den), "ci": ci, "n": int(den.sum())}


# --- following -------------------------------------------------------------------------------


def following_scores(records: Sequence[DialogueRecord], seed: int = 0) -> dict[str, Any]:
    """Following per attribute and in the mean, with chance and the constant control (the
    requests' drawn pictures must be judged)."""
    d, a = len(records), len(FOLLOWED)
    right, drawn, asked = np.zeros((d, a)), np.zeros((d, a)), np.zeros((d, a))
    requested_values: dict[str, Counter] = {name: Counter() for name in FOLLOWED}
    for i, record in enumerate(records):
        for request in record.requests:
            if request.drawn and request.judged is None:
                raise ValueError("following needs the judge's reading of every drawn picture")
            for name, value in request.pinned.items():
                j = FOLLOWED.index(name)
                requested_values[name][value] += 1
                asked[i, j] += 1
                if request.judged is not None:
                    drawn[i, j] += 1
                    right[i, j] += request.judged.get(name) == value
    present = [j for j, name in enumerate(FOLLOWED) if asked[:, j].sum() > 0]
    per_attribute = {}
    for j in present:
        name = FOLLOWED[j]
        counts = requested_values[name]
        per_attribute[name] = {
            **_figure(right[:, j], drawn[:, j], seed),
            "chance": 1 / len(SCHEMA[name]),
            "best_constant": max(counts.values()) / sum(counts.values()),
        }
    names = [FOLLOWED[j] for j in present]
    return {
        "mean": _figure(right[:, present], drawn[:, present], seed)["value"] if present else None,
        "ci": bootstrap_mean_of_ratios(right[:, present], drawn[:, present], seed=seed)
        if present
        else None,
        "chance": _mean([1 / len(SCHEMA[n]) for n in names]),
        "best_constant": _mean([per_attribute[n]["best_constant"] for n in names]),
        "mean_all_requests": _figure(right[:, present], asked[:, present], seed)
        if present
        else None,
        "per_attribute": per_attribute,
    }


def text_following_scores(records: Sequence[DialogueRecord], seed: int = 0) -> dict[str, Any]:
    """The request's pinned values that the reply's words state, over the attributes the true
    reply's words state (a reply that states nothing, or does not parse, counts as wrong);
    needs no judge."""
    d, a = len(records), len(FOLLOWED)
    right, asked = np.zeros((d, a)), np.zeros((d, a))
    counts: dict[str, Counter] = {name: Counter() for name in FOLLOWED}
    for i, record in enumerate(records):
        for request in record.requests:
            for name, value in request.pinned.items():
                if name not in request.true_stated:
                    continue
                j = FOLLOWED.index(name)
                counts[name][value] += 1
                asked[i, j] += 1
                right[i, j] += (request.stated or {}).get(name) == value
    present = [j for j, name in enumerate(FOLLOWED) if asked[:, j].sum() > 0]
    if not present:
        return {"mean": None, "ci": None, "per_attribute": {}}
    names = [FOLLOWED[j] for j in present]
    figure = _figure(right[:, present], asked[:, present], seed)
    return {
        "mean": figure["value"],
        "ci": figure["ci"],
        "chance": _mean([1 / len(SCHEMA[n]) for n in names]),
        "best_constant": _mean([max(counts[n].values()) / sum(counts[n].values()) for n in names]),
        "per_attribute": {FOLLOWED[j]: _figure(right[:, j], asked[:, j], seed) for j in present},
    }


def reply_scores(records: Sequence[DialogueRecord], judged: bool, seed: int = 0) -> dict[str, Any]:
    """Well-formed and on-form replies, text following, and (judged) pictures vs their words."""
    count = np.array([len(r.replies) for r in records], dtype=np.float64)
    formed = np.array([sum(x.well_formed for x in r.replies) for r in records], np.float64)
    on_form = np.array([sum(x.on_form for x in r.replies) for r in records], np.float64)
    out = {
        "well_formed": _figure(formed, count, seed),
        "on_form": _figure(on_form, count, seed),
        "text_following": text_following_scores(records, seed),
        "picture_vs_text": None,
    }
    if judged:
        d, a = len(records), len(FOLLOWED)
        agree, stated = np.zeros((d, a)), np.zeros((d, a))
        for i, record in enumerate(records):
            for reply in record.replies:
                for words, reading in reply.stated_vs_judged:
                    for j, name in enumerate(FOLLOWED):
                        if name in words:
                            stated[i, j] += 1
                            agree[i, j] += reading.get(name) == words[name]
        present = [j for j in range(a) if stated[:, j].sum() > 0]
        if present:
            figure = _figure(agree[:, present], stated[:, present], seed)
            out["picture_vs_text"] = {
                **figure,
                "chance": _mean([1 / len(SCHEMA[FOLLOWED[j]]) for j in present]),
                "per_attribute": {
                    FOLLOWED[j]: _figure(agree[:, j], stated[:, j], seed) for j in present
                },
            }
    return out


def drawn_scores(records: Sequence[DialogueRecord], seed: int = 0) -> dict[str, Any]:
    """The share of requested pictures that were drawn at all (needs no judge)."""
    drawn = np.array([sum(r.drawn for r in rec.requests if r.pinned) for rec in records], float)
    asked = np.array([sum(bool(r.pinned) for r in rec.requests) for rec in records], float)
    return _figure(drawn, asked, seed)


# --- identity --------------------------------------------------------------------------------


def _agreement(a: Sequence[dict[str, str]], b: Sequence[dict[str, str]], name: str) -> float:
    return float(np.mean([x[name] == y[name] for x in a for y in b]))


def identity_scores(records: Sequence[DialogueRecord], seed: int = 0) -> dict[str, Any]:
    """Within-dialogue agreement and match to the persona, each against its cross-persona
    control (see the module docstring), per identity attribute and in the mean."""
    names = IDENTITY_ATTRIBUTES
    d, a = len(records), len(names)
    within, across = np.zeros((d, a)), np.zeros((d, a))  # per-dialogue agreements
    has_within, has_across = np.zeros((d, a)), np.zeros((d, a))
    versus, versus_other = np.zeros((d, a)), np.zeros((d, a))
    has_versus, has_other = np.zeros((d, a)), np.zeros((d, a))
    looks = [tuple(r.persona[n] for n in names) for r in records]
    for i, record in enumerate(records):
        pics = record.pictures
        if not pics:
            continue
        others = [j for j in range(d) if looks[j] != looks[i]]
        other_pics = [p for j in others for p in records[j].pictures]
        for k, name in enumerate(names):
            pairs = list(itertools.combinations(pics, 2))
            if pairs:
                within[i, k] = np.mean([x[name] == y[name] for x, y in pairs])
                has_within[i, k] = 1
            if other_pics:
                across[i, k] = _agreement(pics, other_pics, name)
                has_across[i, k] = 1
            versus[i, k] = np.mean([p[name] == record.persona[name] for p in pics])
            has_versus[i, k] = 1
            if others:
                versus_other[i, k] = _agreement(pics, [records[j].persona for j in others], name)
                has_other[i, k] = 1
    return {
        "within_dialogue": _kappa_figure(within, has_within, across, has_across, seed),
        "vs_persona": _kappa_figure(versus, has_versus, versus_other, has_other, seed),
        "dialogues_with_2_pictures": int(has_within[:, 0].sum()),
    }


def _kappa(agree: np.ndarray, control: np.ndarray) -> np.ndarray:
    """(agree - control) / (1 - control), 0 where the control is 1 (nothing to tell apart)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(control < 1, (agree - control) / (1 - control), 0.0)


def _kappa_figure(
    agree: np.ndarray, has_agree: np.ndarray, control: np.ndarray, has_control: np.ndarray,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Raw agreement, control and corrected figure (means over attributes), per attribute, with
    intervals from one set of dialogue resamples."""
    raw = (agree * has_agree).sum(0) / np.maximum(has_agree.sum(0), 1e-12)  # (A,)
    base = (control * has_control).sum(0) / np.maximum(has_control.sum(0), 1e-12)
    seen = has_agree.sum(0) > 0
    valid = seen & (has_control.sum(0) > 0)  # a control needs another persona's pictures
    if not seen.any():
        return {"value": None, "ci": None, "raw": None, "control": None, "per_attribute": {}}
    weights = resample_weights(len(agree), seed=seed)  # (B, D)
    boot_raw = (weights @ (agree * has_agree)) / np.maximum(weights @ has_agree, 1e-12)
    boot_base = (weights @ (control * has_control)) / np.maximum(weights @ has_control, 1e-12)
    corrected = _kappa(raw, base)
    per = {
        name: {"raw": float(raw[k]), "control": float(base[k]) if valid[k] else None,
               "corrected": float(corrected[k]) if valid[k] else None}
        for k, name in enumerate(IDENTITY_ATTRIBUTES)
        if seen[k]
    }  # fmt: skip
    return {
        "value": float(corrected[valid].mean()) if valid.any() else None,
        "ci": _percentiles(_kappa(boot_raw, boot_base)[:, valid].mean(1)) if valid.any() else None,
        "raw": float(raw[seen].mean()),
        "raw_ci": _percentiles(boot_raw[:, seen].mean(1)),
        "control": float(base[valid].mean()) if valid.any() else None,
        "per_attribute": per,
    }


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


# --- diversity and understanding ---------------------------------------------------------------


def diversity_scores(records: Sequence[DialogueRecord]) -> dict[str, Any]:
    """Distinct pictures among those drawn, and per requested attribute the distinct values
    drawn vs requested (a collapsed model draws one value whatever is asked)."""
    ids = [seq for r in records for seq in r.ids]
    pictures = [tuple(sorted(p.items())) for r in records for p in r.pictures]
    values: dict[str, dict[str, set]] = {n: {"requested": set(), "drawn": set()} for n in FOLLOWED}
    for record in records:
        for request in record.requests:
            for name, value in request.pinned.items():
                values[name]["requested"].add(value)
                if request.judged is not None:
                    values[name]["drawn"].add(request.judged[name])
    readings = bool(pictures)
    return {
        "pictures": len(pictures),
        "distinct_id_sequences": len(set(ids)) / len(ids) if ids else None,
        "distinct_readings": len(set(pictures)) / len(pictures) if readings else None,
        "values_drawn_vs_requested": {
            name: {"drawn": len(v["drawn"]), "requested": len(v["requested"])}
            for name, v in values.items()
            if v["requested"]
        }
        if readings
        else None,
    }


def understanding_scores(records: Sequence[DialogueRecord], seed: int = 0) -> dict[str, Any]:
    """Answer accuracy (overall, per question) beside the blind majority answer's."""
    answers = [a for r in records for a in r.answers]
    majority = {
        topic: Counter(a.truth for a in answers if a.topic == topic).most_common(1)[0][0]
        for topic in {a.topic for a in answers}
    }
    right = np.array([sum(a.correct for a in r.answers) for r in records], dtype=np.float64)
    blind = np.array(
        [sum(a.truth == majority[a.topic] for a in r.answers) for r in records], dtype=np.float64
    )
    count = np.array([len(r.answers) for r in records], dtype=np.float64)
    per_question = {
        topic: {
            "accuracy": _mean([float(a.correct) for a in answers if a.topic == topic]),
            "blind_majority": _mean([float(a.truth == value) for a in answers if a.topic == topic]),
            "n": sum(a.topic == topic for a in answers),
        }
        for topic, value in sorted(majority.items())
    }
    figure, blind_figure = _figure(right, count, seed), _figure(blind, count, seed)
    return {
        "accuracy": figure["value"],
        "ci": figure["ci"],
        "blind_majority": blind_figure["value"],
        "blind_majority_ci": blind_figure["ci"],
        "per_question": per_question,
        "n": figure["n"],
    }


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def chat_scores(records: Sequence[DialogueRecord], judged: bool, seed: int = 0) -> dict[str, Any]:
    """Every chat figure of `records`; judged False (no judge, or it failed its gate): the
    judged ones (following, identity, the judged parts of diversity and replies) are None."""
    return {
        "generation_following": following_scores(records, seed) if judged else None,
        "pictures_drawn": drawn_scores(records, seed),
        "identity_consistency": identity_scores(records, seed) if judged else None,
        "diversity": diversity_scores(records),
        "understanding": understanding_scores(records, seed),
        "replies": reply_scores(records, judged, seed),
    }
