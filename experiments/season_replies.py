"""Which season does the chat model's reply state when a request asks for one? Reads a chat
evaluation (RUN/sft/chat_eval.json) and sorts each "What about PLACE in SEASON?" reply by the
season its words state: the one asked for, the one the user's remark names (the season of the
assistant's previous photo), another one, or none. Chance for "asked" is 1/4.

    python experiments/season_replies.py A/chat_eval.json [B/chat_eval.json ...] [--out X.json]

English transcripts only (the world's English request form).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import Counter
from pathlib import Path

from svq.provenance import provenance

SEASONS = ("spring", "summer", "autumn", "winter")
ASK = "What about"
KINDS = ("asked", "remark", "other", "none")


def seasons_in(text: str) -> list[str]:
    return [s for s in SEASONS if re.search(rf"\b{s}\b", text)]


def classify(chat_eval: dict) -> Counter:
    """Counter over "asked" / "remark" / "other" / "none" for every season request."""
    counts: Counter = Counter()
    for transcript in chat_eval["transcripts"]:
        messages = transcript["messages"]
        for before, reply in itertools.pairwise(messages):
            if reply["role"] != "assistant" or not reply["images"] or ASK not in before["text"]:
                continue
            remark, ask = before["text"].rsplit(ASK, 1)
            asked = seasons_in(ask)
            if len(asked) != 1:
                continue  # not a season request
            said = seasons_in(reply["text"])
            if not said:
                counts["none"] += 1
            elif said[0] == asked[0]:
                counts["asked"] += 1
            elif said[0] in seasons_in(remark):
                counts["remark"] += 1
            else:
                counts["other"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chat_evals", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="a results JSON (with command, commit, machine)")
    args = parser.parse_args()
    rows = {}
    for path in args.chat_evals:
        counts = classify(json.loads(path.read_text()))
        total = sum(counts.values())
        rows[str(path)] = {"requests": total, **{k: counts.get(k, 0) for k in KINDS}}
        shares = ", ".join(f"{k} {counts.get(k, 0)} ({counts.get(k, 0) / max(total, 1):.0%})"
                           for k in KINDS)  # fmt: skip
        print(f"{path}: {total} season requests: {shares}")
    if args.out:
        args.out.write_text(json.dumps({**provenance(), "chance_asked": 0.25, "runs": rows},
                                       indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
