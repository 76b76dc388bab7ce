"""How alike a chat model's input embeddings of the world's values are, per attribute: the mean
pairwise cosine of the tokens of the four seasons, the three times of day and the four places
(the demo LLM ties its input and output embeddings). Words the model cannot tell apart in its
input are words it cannot read.

    HF_HUB_OFFLINE=1 python experiments/word_embeddings.py --models RUN/sft/model ... \\
        --out benchmarks/results/word_embeddings.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from svq.data import SCHEMA
from svq.data.captions import words
from svq.llm import SVQChat
from svq.llm.tiny import chat_world_corpus, tiny_llm, train_tokenizer
from svq.provenance import provenance

GROUPS = {  # attribute -> the word of each value (the last token of " word" is used)
    "season": words("en")["season"],
    "time_of_day": {"day": "day", "sunset": "sunset", "night": "night"},
    "place": {p: words("en")["place_name"][p].split()[-1] for p in SCHEMA["place"]},
}


def mean_cosine(llm, tokenizer, group: dict[str, str]) -> dict:
    table = llm.get_input_embeddings().weight.detach().float()
    ids = {v: tokenizer(" " + w, add_special_tokens=False)["input_ids"][-1]
           for v, w in group.items()}  # fmt: skip
    vectors = torch.nn.functional.normalize(table[list(ids.values())], dim=-1)
    pairs = list(itertools.combinations(range(len(ids)), 2))
    cosines = [float(vectors[i] @ vectors[j]) for i, j in pairs]
    return {"tokens": {v: tokenizer.convert_ids_to_tokens(i) for v, i in ids.items()},
            "mean_pairwise_cosine": sum(cosines) / len(cosines)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="SVQChat folders")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args()
    record = {**provenance(), "models": {}}
    # the demo's LLM before training: its tokenizer and initialisation (svq.train.llm_sft)
    tokenizer = train_tokenizer(chat_world_corpus(400, 0))
    models = {"initialisation (demo preset, seed 0)": (tiny_llm(tokenizer, "demo", 0), tokenizer)}
    for model in args.models:
        chat = SVQChat.from_pretrained(model)
        models[str(model)] = (chat.llm, chat.tokenizer)
    for model, (llm, tokenizer) in models.items():
        figures = {name: mean_cosine(llm, tokenizer, group) for name, group in GROUPS.items()}
        record["models"][model] = figures
        print(model, {k: round(v["mean_pairwise_cosine"], 3) for k, v in figures.items()})
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
