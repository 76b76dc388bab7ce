"""Where a trained chat model's LM loss goes: teacher-forced next-token cross-entropy on chat
world dialogues, split into image-span tokens (<boi>, codes, <eoi>) and text tokens, and for
the season words of the replies (the one text decision the replies get wrong) their
cross-entropy and accuracy. On the SFT's own training chats (is a weak reply underfitting or
overfitting?) and on held-out ones. Chance for a season word is ln 4 = 1.386 nats, 25%.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python experiments/loss_share.py \\
        --runs runs/sft-a runs/sft-b --out benchmarks/results/loss_share.json

Each RUN is an SFT output folder (RUN/model, RUN/image_cache). Train chats: the first
--num_dialogues of the world's train split (seed 0, English), the SFT's own data; held-out:
the validation split's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from svq.data import SCHEMA
from svq.llm import SVQChat, collate
from svq.llm.sft_data import SFTDataset, encode_images, load_chats
from svq.provenance import provenance

ASK = "What about"  # the English request form
SFT_TRAIN_DIALOGUES = 2000  # the SFT's data: its image cache is keyed on it


def asked_seasons(chat: dict) -> list[str | None]:
    """Per assistant turn of a world chat, the season its user turn asks for ("What about
    PLACE in SEASON?"), else None."""
    asked, before = [], ""
    for message in chat["messages"]:
        text = "".join(p["text"] for p in message["content"] if p["type"] == "text")
        if message["role"] == "assistant":
            request = before.rsplit(ASK, 1)[1] if ASK in before else ""
            named = [s for s in SCHEMA["season"] if re.search(rf"\b{s}\b", request)]
            asked.append(named[0] if len(named) == 1 else None)
        before = text
    return asked


def turns(labelled: torch.Tensor) -> torch.Tensor:
    """(T,) bool -> (T,) long: the index of the assistant turn each labelled position is in
    (runs of labelled positions, in order), -1 elsewhere."""
    starts = labelled & ~torch.cat([labelled.new_zeros(1), labelled[:-1]])
    return torch.where(labelled, starts.long().cumsum(0) - 1, -1)


@torch.no_grad()
def loss_share(
    chat: SVQChat, dataset: SFTDataset, chats: list[dict], count: int, batch_size: int = 16
) -> dict:
    """Per-token CE sums over the first `count` chats of `dataset` (`chats`: their world
    chats, in the same order), by kind of token."""
    tokenizer, vocab = chat.tokenizer, chat.vocab
    season_ids = torch.tensor(
        [tokenizer.convert_tokens_to_ids("\u2581" + s) for s in SCHEMA["season"]]
    )
    if (season_ids == tokenizer.unk_token_id).any():
        raise SystemExit("the tokenizer has no single token per season word")
    kinds = ("text", "image_span", "season", "season_asked")
    sums = {k: {"tokens": 0, "ce": 0.0, "correct": 0} for k in kinds}
    for start in range(0, count, batch_size):
        index = range(start, min(start + batch_size, count))
        batch = collate([dataset[i] for i in index], pad_token_id=chat.pad_token_id)
        out = chat.llm(inputs_embeds=chat.embed(batch), attention_mask=batch.attention_mask)
        targets = batch.labels[:, 1:]
        labelled = targets != -100
        # the season each target's turn asks for (-1: none), as a token id
        asked = torch.full_like(targets, -1)
        for row, i in enumerate(index):
            turn = turns(labelled[row])
            for k, season in enumerate(asked_seasons(chats[i])):
                if season is not None:
                    token = season_ids[SCHEMA["season"].index(season)]
                    asked[row][turn == k] = token
        asked = asked[labelled]
        logits, targets = out.logits[:, :-1][labelled].float(), targets[labelled]
        ce = F.cross_entropy(logits, targets, reduction="none")
        correct = logits.argmax(-1) == targets
        span = vocab.is_code(targets) | (targets == vocab.boi_id) | (targets == vocab.eoi_id)
        for kind, mask in (
            ("text", ~span),
            ("image_span", span),
            ("season", torch.isin(targets, season_ids)),
            # the season word of a reply to "What about PLACE in SEASON?": the one asked for?
            ("season_asked", torch.isin(targets, season_ids) & (asked >= 0)),
        ):
            if kind == "season_asked" and bool((targets[mask] != asked[mask]).any()):
                raise SystemExit("a reply's season word is not the one asked for: misaligned")
            sums[kind]["tokens"] += int(mask.sum())
            sums[kind]["ce"] += float(ce[mask].sum())
            sums[kind]["correct"] += int(correct[mask].sum())
    total = sums["text"]["ce"] + sums["image_span"]["ce"]
    return {
        kind: {
            "tokens": s["tokens"],
            "mean_ce": s["ce"] / max(s["tokens"], 1),
            "accuracy": s["correct"] / max(s["tokens"], 1),
            "share_of_lm_loss": s["ce"] / total,
        }
        for kind, s in sums.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="SFT output folders")
    parser.add_argument("--num_dialogues", type=int, default=256)
    parser.add_argument(
        "--cache_dir", type=Path, default=None,
        help="the SFT's image cache (default RUN/image_cache; experiments/sft_budget.py's "
        "variants share DEMO_RUN/sft/image_cache)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args()
    record = {**provenance(), "num_dialogues": args.num_dialogues,
              "season_chance": {"mean_ce": math.log(4), "accuracy": 0.25}, "runs": {}}  # fmt: skip
    for run in args.runs:
        chat = SVQChat.from_pretrained(run / "model").eval()
        tokenizer = chat.config.image_tokenizer
        figures = {}
        for split, n, cache in (
            ("train", SFT_TRAIN_DIALOGUES, args.cache_dir or run / "image_cache"),
            ("validation", args.num_dialogues, None),
        ):
            data = load_chats("world", seed=0, split=split, num_dialogues=n, lang="en")
            images = encode_images(data, chat.svq, chat.spatial, cache)
            dataset = SFTDataset(data, images, chat.tokenizer, chat.vocab, 1024, tokenizer)
            if dataset.num_too_long:
                raise SystemExit(f"{dataset.num_too_long} chats too long: turns would not align")
            count = min(args.num_dialogues, len(dataset))
            figures[split] = loss_share(chat, dataset, data.chats, count)
            print(run, split, json.dumps(figures[split]), flush=True)
        record["runs"][str(run)] = figures
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
