"""Which season does the chat model's reply state when a request asks for one? Reads a chat
evaluation (RUN/sft/chat_eval.json) and sorts each "What about PLACE in SEASON?" reply by the
season its words state: the one asked for, the one the user's remark names (the season of the
assistant's previous photo), another one, or none. Chance for "asked" is 1/4.

    python experiments/season_replies.py RUN/sft/chat_eval.json [--out results.json]

English transcripts only (the world's English request form).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import Counter
from pathlib import Path

SEASONS = ("spring", "summer", "autumn", "winter")
ASK = "What about"


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
    parser.add_argument("chat_eval", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    counts = classify(json.loads(args.chat_eval.read_text()))
    total = sum(counts.values())
    row = {k: counts.get(k, 0) for k in ("asked", "remark", "other", "none")}
    print(f"{total} season requests: " + ", ".join(f"{k} {v} ({v / max(total, 1):.0%})"
                                                  for k, v in row.items()))  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"source": str(args.chat_eval), "requests": total,
                                        **row}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
