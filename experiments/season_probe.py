"""Does a trained chat model read the season word of a request? For every "What about PLACE in
SEASON?" turn of the held-out chats (the chat evaluation's dialogues), the true conversation
up to that turn is given four times, the asked season set to each of the four, and the reply's
words generated greedily (text only, up to its picture) and read with the world's grammar. A
model that ignores the word says the same season in all four: 25% asked ("deaf" requests: one
season whatever was asked). Three forms of the user turn, to find what hides the word:

- as_is: the world's turn, "Wow, autumn at Changbai mountain looks lovely! What about the beach
  in SEASON?" (the remark names the last photo's season);
- no_remark: "What about the beach in SEASON?" alone (one season named);
- remark_agrees: the remark's season set to the asked one too.

The control: "Do you have a photo from PLACE TIME?" requests, the time of day set to each of
its three values the same way (chance 1/3), as_is and no_remark.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python experiments/season_probe.py \\
        --models runs/sft-a/model runs/sft-b/model --out benchmarks/results/season_probe.json
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from collections import Counter
from pathlib import Path

import torch

from svq.data import SCHEMA, render
from svq.data.captions import words as world_words
from svq.data.dialogues import PHRASES
from svq.data.grammar import parse_reply, stated_values
from svq.eval.chat_eval import eval_dialogues
from svq.llm import SVQChat
from svq.provenance import provenance

SEASONS = {s: world_words("en")["season"][s] for s in SCHEMA["season"]}  # value -> its word
TIMES = PHRASES["en"]["time"]  # value -> its phrase ("at night")
# kind -> (attribute, where the request begins, value -> words, the forms probed)
KINDS = {
    "season": ("season", "What about", SEASONS, ("as_is", "no_remark", "remark_agrees")),
    "time_of_day": ("time_of_day", "Do you have a photo from", TIMES, ("as_is", "no_remark")),
}


def _pattern(words: dict[str, str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words.values(), key=len, reverse=True))


def named(text: str, words: dict[str, str]) -> list[str]:
    """The values whose words `text` names, in order."""
    inverse = {w: v for v, w in words.items()}
    return [inverse[m.group(0)] for m in re.finditer(rf"\b({_pattern(words)})\b", text)]


def user_turn(text: str, kind: str, value: str, form: str) -> str:
    """A request `text` of `kind` with the value it asks for set to `value`, in `form`."""
    _, start, words, _ = KINDS[kind]
    remark, ask = text.rsplit(start, 1)
    ask = re.sub(rf"\b({_pattern(words)})\b", words[value], ask)
    if form == "no_remark":
        return f"{start}{ask}"
    if form == "remark_agrees":
        remark = re.sub(rf"\b({_pattern(words)})\b", words[value], remark)
    return f"{remark}{start}{ask}"


def requests(chat: SVQChat, num_dialogues: int, kind: str) -> list[tuple[list[dict], int]]:
    """(resolved conversation up to a request of `kind`, index of its user turn) per request."""
    _, start, words, _ = KINDS[kind]
    size = chat.svq.config.image_size
    out = []
    for dialogue in eval_dialogues(num_dialogues, seed=0):
        messages = []
        for message in dialogue.messages:
            parts = [
                {"type": "image", "image": render(p["record"], size)} if p["type"] == "image" else p
                for p in message["content"]
            ]
            messages.append({"role": message["role"], "content": parts})
        for m, message in enumerate(messages[:-1]):
            text = "".join(p["text"] for p in message["content"] if p["type"] == "text")
            asks = text.rsplit(start, 1)[1] if start in text else ""
            if message["role"] == "user" and len(named(asks, words)) == 1:
                out.append((chat.prepare(messages[: m + 1]), m))
    return out


@torch.no_grad()
def probe(chat: SVQChat, kind: str, found: list, batch_size: int) -> dict:
    attribute, start, words, forms = KINDS[kind]
    figures = {"requests": len(found), "chance": 1 / len(words)}
    for form in forms:
        prompts, asked = [], []
        for resolved, m in found:
            for value in words:
                prompt = copy.deepcopy(resolved)
                for part in prompt[m]["content"]:
                    if part["type"] == "text" and start in part["text"]:
                        part["text"] = user_turn(part["text"], kind, value, form)
                prompts.append(prompt)
                asked.append(value)
        said = []
        for i in range(0, len(prompts), batch_size):
            for reply in chat.generate(prompts[i : i + batch_size], max_new_tokens=40):
                text = " ".join(p["text"] for p in reply["content"] if p["type"] == "text")
                said.append(stated_values(parse_reply(text)).get(attribute))
        per_request = [said[i : i + len(words)] for i in range(0, len(said), len(words))]
        figures[form] = {
            "n": len(said),
            "asked": sum(s == a for s, a in zip(said, asked, strict=True)) / len(said),
            "unstated": sum(s is None for s in said) / len(said),
            # requests whose reply states one value whatever was asked
            "deaf_requests": sum(len(set(r)) == 1 for r in per_request) / len(per_request),
            "said": dict(Counter(str(s) for s in said)),
        }
        print(kind, form, json.dumps(figures[form]), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="SVQChat folders")
    parser.add_argument("--num_dialogues", type=int, default=320)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args()
    record = {**provenance(), "num_dialogues": args.num_dialogues, "models": {}}
    for model in args.models:
        chat = SVQChat.from_pretrained(model).eval()
        record["models"][str(model)] = {
            kind: probe(chat, kind, requests(chat, args.num_dialogues, kind), args.batch_size)
            for kind in KINDS
        }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
