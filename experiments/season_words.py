"""Where a chat's season goes wrong when it draws: in the reply's words, or in its picture?
From a chat evaluation's transcripts (`svq.eval.chat_eval.evaluate_chat`, the pictures in its
folder): per scene attribute, how often the reply's words state what the request asked (the
evaluation's text following), and, per picture, the season its words state against the one
the judge reads off the picture (a confusion table).

    HF_HUB_OFFLINE=1 python experiments/season_words.py --judge runs/demo/judge \\
        --evals svq=runs/demo/sft baseline=runs/demo/baseline --results season_words
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq.data.grammar import parse_reply, stated_values
from svq.eval.chat_eval import judge_pictures
from svq.eval.judge import load_judge


def season_agreement(folder: Path, judge) -> dict:
    """The season each drawn picture's words state against the judge's reading of it."""
    report = json.loads((folder / "chat_eval.json").read_text())
    pictures, said = [], []
    for transcript in report["transcripts"]:
        for message in transcript["messages"]:
            if message["role"] != "assistant":
                continue
            season = stated_values(parse_reply(message["text"])).get("season")
            for path in message["images"]:
                pictures.append(Image.open(folder / path).convert("RGB"))
                said.append(season)
    read = [r["season"] for r in judge_pictures(judge, pictures)]
    pairs = Counter((s, r) for s, r in zip(said, read, strict=True) if s is not None)
    stated = sum(pairs.values())
    return {
        "pictures": len(pictures),
        "stating_a_season": stated,
        "picture_agrees_with_words": sum(c for (s, r), c in pairs.items() if s == r) / stated,
        "words_vs_picture": {f"{s}->{r}": c for (s, r), c in sorted(pairs.items())},
        "words_follow_request": {
            a: row["value"]
            for a, row in report["replies"]["text_following"]["per_attribute"].items()
        },
        "pictures_follow_request": {
            a: row["value"] for a, row in report["generation_following"]["per_attribute"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", required=True, help="an AttributeJudge folder")
    parser.add_argument("--evals", nargs="+", required=True, help="NAME=FOLDER with chat_eval.json")
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    judge = load_judge(args.judge)
    rows = {}
    for item in args.evals:
        name, folder = item.split("=", 1)
        rows[name] = {"folder": folder, **season_agreement(Path(folder), judge)}
        row = rows[name]
        print(f"{name}: season words follow the request {row['words_follow_request']['season']:.1%}"
              f", pictures {row['pictures_follow_request']['season']:.1%}, pictures agree with "
              f"their words {row['picture_agrees_with_words']:.1%}", flush=True)  # fmt: skip
    write_results(args.results, {"judge": args.judge, "evals": rows})


if __name__ == "__main__":
    main()
