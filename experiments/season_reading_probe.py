"""Does a trained chat model read a photo's season off the picture itself? One-turn chats, no
conversation around them: the user shares a held-out world picture and asks the world's
photo question for an attribute ("What season does it look like?"), or asks for its caption
("What is in this photo?"); the answer's value is compared with the picture's truth.

A model that answers the season right here but not inside the evaluation's dialogues is
misled by the talk; one that fails here does not read the season from the picture's features.
The controls: the time of day asked the same way, the place named in the caption.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python experiments/season_reading_probe.py \\
        --models a=runs/demo/sft/model b=runs/demo/baseline/model --num_images 200 \\
        --results season_reading_probe
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq.data import render
from svq.data.captions import words as world_words
from svq.data.dialogues import PHRASES
from svq.data.sampler import world_record
from svq.eval.chat_eval import answer_value
from svq.llm import SVQChat
from svq.llm.describe_data import DESCRIBE_PROMPTS

QUESTIONS = ("season", "time_of_day")  # the world's photo questions probed
CAPTION = ("place", "season")  # what a caption is read for


def caption_values(text: str) -> dict[str, str | None]:
    """The place and season a caption names (the first of each attribute's phrases in it)."""
    w = world_words("en")
    found = {}
    for attribute in CAPTION:
        hits = [(text.find(p), v) for v, p in w[attribute].items() if p in text]
        found[attribute] = min(hits)[1] if hits else None
    return found


@torch.no_grad()
def probe(chat: SVQChat, records: list, batch_size: int) -> dict:
    size = chat.svq.config.image_size
    photos = [render(r, size) for r in records]
    asks = {q: PHRASES["en"]["questions"][q] for q in QUESTIONS}
    asks["caption"] = DESCRIBE_PROMPTS["en"]
    figures = {}
    for name, text in asks.items():
        prompts = [
            chat.prepare([{"role": "user", "content": [{"type": "image", "image": p},
                                                       {"type": "text", "text": text}]}])
            for p in photos
        ]  # fmt: skip
        replies = []
        for i in range(0, len(prompts), batch_size):
            for reply in chat.generate(prompts[i : i + batch_size], max_new_tokens=40):
                text = " ".join(p["text"] for p in reply["content"] if p["type"] == "text")
                replies.append(text)
        if name == "caption":
            said = [caption_values(r) for r in replies]
            for attribute in CAPTION:
                right = [s[attribute] == getattr(r.scene, attribute)
                         for s, r in zip(said, records, strict=True)]  # fmt: skip
                figures[f"caption_{attribute}"] = {
                    "accuracy": sum(right) / len(right),
                    "said": dict(Counter(str(s[attribute]) for s in said)),
                }
        else:
            said = [answer_value(name, r) for r in replies]
            right = [s == getattr(r.scene, name) for s, r in zip(said, records, strict=True)]
            counts = dict(Counter(map(str, said)))
            figures[name] = {"accuracy": sum(right) / len(right), "said": counts}
        figures[f"{name}_examples"] = replies[:3]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=SVQChat folder")
    parser.add_argument("--num_images", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    records = [world_record(0, "validation", i) for i in range(args.num_images)]
    truth = dict(Counter(r.scene.season for r in records))
    out = {"num_images": args.num_images, "seasons": truth, "models": {}}
    for item in args.models:
        name, folder = item.split("=", 1)
        chat = SVQChat.from_pretrained(folder).eval()
        out["models"][name] = {"folder": folder, **probe(chat, records, args.batch_size)}
        row = {k: round(v["accuracy"], 3) for k, v in out["models"][name].items()
               if isinstance(v, dict) and "accuracy" in v}  # fmt: skip
        print(name, row, flush=True)
    write_results(args.results, out)


if __name__ == "__main__":
    main()
