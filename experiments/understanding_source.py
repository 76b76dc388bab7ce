"""Where do the chat's answers about the user's photo come from: the photo, or the assistant's
own look? For each question about the person in a user photo (hair, shirt colour, hat, glasses)
in a chat evaluation's transcripts, the value the answer states is compared with the photo's
truth and with the persona's value (the look the system prompt gives the assistant), beside
how often the two coincide anyway.

    HF_HUB_OFFLINE=1 python experiments/understanding_source.py \\
        --eval control=RUN/sft/chat_eval.json baseline=RUN/baseline/chat_eval.json \\
        --out benchmarks/results/understanding_source.json

The transcripts are those of `svq.eval.chat_eval.evaluate_chat` (English, world seed 0); the
held-out chats are rebuilt with `eval_dialogues` to read each one's persona.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from svq.data import IDENTITY_ATTRIBUTES
from svq.eval.chat_eval import answer_value, eval_dialogues, question_topic, truth_value
from svq.provenance import provenance

PERSON = ("hair", "shirt_colour", "hat", "glasses")


def sources(report: dict, seed: int = 0) -> dict[str, dict[str, float | int]]:
    """Per person question: the share of answers stating the photo's value, the persona's,
    and how often the two are the same value."""
    transcripts = report["transcripts"]
    dialogues = eval_dialogues(len(transcripts), seed, "en")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for dialogue, transcript in zip(dialogues, transcripts, strict=True):
        if dialogue.id != transcript["id"]:
            raise ValueError(f"transcript {transcript['id']} is not dialogue {dialogue.id}")
        persona = {n: getattr(dialogue.persona, n) for n in IDENTITY_ATTRIBUTES}
        talk = [m for m in dialogue.messages if m["role"] != "system"]  # as the transcript
        for m, message in enumerate(talk[:-1]):
            if message["role"] != "user" or isinstance(message["content"], str):
                continue
            photos = [p for p in message["content"] if p["type"] == "image"]
            text = " ".join(p["text"] for p in message["content"] if p["type"] == "text")
            topic = question_topic(text)
            if topic not in PERSON or len(photos) != 1:
                continue
            reply = transcript["messages"][m + 1]["text"]
            said = answer_value(topic, reply)
            truth = truth_value(topic, photos[0]["attributes"])
            own = truth_value(topic, persona)
            c = counts[topic]
            c["n"] += 1
            c["photo"] += said == truth
            c["persona"] += said == own
            c["same"] += truth == own
    return {
        topic: {
            "n": c["n"],
            "states_the_photo": c["photo"] / c["n"],
            "states_the_persona": c["persona"] / c["n"],
            "photo_equals_persona": c["same"] / c["n"],
        }
        for topic, c in sorted(counts.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", nargs="+", required=True, help="NAME=PATH of a chat_eval.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = {**provenance(), "runs": {}}
    for item in args.eval:
        name, path = item.split("=", 1)
        record["runs"][name] = {"path": path, **sources(json.loads(Path(path).read_text()))}
        for topic, row in record["runs"][name].items():
            if topic != "path":
                print(name, topic, json.dumps(row))
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
