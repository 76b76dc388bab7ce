"""Which season does the chat model's reply state when a request asks for one? Reads a chat
evaluation (RUN/sft/chat_eval.json) and sorts each "What about PLACE in SEASON?" reply by the
season its words state: the one asked for, the one the user's remark names (the season of the
assistant's previous photo), another one, or none. Chance for "asked" is 1/4.

    python experiments/season_replies.py A/chat_eval.json [B/chat_eval.json ...] [--out X.json]
    python experiments/season_replies.py --train_dialogues 2000   # what the SFT data teaches

The second form reads the SFT's training dialogues (the chat world's train split, seed 0,
English) and counts, for every assistant picture whose user turn names a season, whether the
picture's season is the last season the user named, another one the user named, or one the
user did not name, for the opening exchange and for the later requests apart.

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


def training_data(num_dialogues: int) -> dict[str, Counter]:
    """{"opening" | "request": Counter over "last named" / "named earlier" / "not named"}."""
    from svq.llm.sft_data import IMAGE_INDEX, world_chats

    data = world_chats(0, "train", num_dialogues, "en")
    counts: dict[str, Counter] = {"opening": Counter(), "request": Counter()}
    for chat in data.chats:
        messages = chat["messages"]
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        for n, i in enumerate(turns):
            user = " ".join(p.get("text", "") for p in messages[i - 1]["content"])
            named = [(user.rfind(s), s) for s in SEASONS if re.search(rf"\b{s}\b", user)]
            pictures = [p for p in messages[i]["content"] if p.get("type") == "image"]
            if not named or not pictures:
                continue
            last = max(named)[1]
            season = data.images[pictures[0][IMAGE_INDEX]].scene.season
            kind = "opening" if n == 0 else "request"
            if season == last:
                counts[kind]["last named"] += 1
            elif season in {s for _, s in named}:
                counts[kind]["named earlier"] += 1
            else:
                counts[kind]["not named"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chat_evals", type=Path, nargs="*")
    parser.add_argument("--train_dialogues", type=int, default=0)
    parser.add_argument("--out", type=Path, help="a results JSON (with command, commit, machine)")
    args = parser.parse_args()
    if args.train_dialogues:
        taught = training_data(args.train_dialogues)
        for kind, counts in taught.items():
            total = sum(counts.values())
            shares = ", ".join(f"{k} {v} ({v / max(total, 1):.0%})" for k, v in counts.items())
            print(f"training data, {kind}: {total} pictures after a season is named: {shares}")
        if args.out:
            result = {**provenance(), "train_dialogues": args.train_dialogues,
                      "taught": {k: dict(v) for k, v in taught.items()}}  # fmt: skip
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return
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
