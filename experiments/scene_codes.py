"""How much of the scene each position's id carries: what a chat LLM must learn to write a
place or a season as ids.

For the first pictures of the chat world's train split, the tokenizer's ids (n, N) and the
scene attributes; per position p and attribute a: the entropy of the id H(id_p), the
information it carries about the attribute I(id_p; a) (plug-in estimates, in bits, with the
attribute's own entropy H(a) beside them), and how often the attribute is read back from that
one id on the second half of the pictures by the majority value of each id on the first half
(an id not seen there: the most common value). Also a naive-Bayes read of the attribute from
the first K ids together (add-one smoothing, fitted on the first half).

    HF_HUB_OFFLINE=1 python experiments/scene_codes.py --model runs/demo-quick/stage2/model \\
        --num_images 8000 --results scene_codes_quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq import StyledVAEVQ
from svq.data import ChatWorldDataset
from svq.data.schema import ATTRIBUTES, SCENE_ATTRIBUTES, SCHEMA


def entropy(counts: torch.Tensor) -> float:
    """Plug-in entropy in bits of a count tensor (any shape)."""
    p = counts.flatten().double() / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def mutual_information(x: torch.Tensor, y: torch.Tensor, nx: int, ny: int) -> float:
    """I(x; y) in bits from paired samples x in [0, nx), y in [0, ny)."""
    joint = torch.bincount(x * ny + y, minlength=nx * ny).reshape(nx, ny)
    return entropy(joint.sum(1)) + entropy(joint.sum(0)) - entropy(joint)


def majority_read(x: torch.Tensor, y: torch.Tensor, nx: int, ny: int) -> float:
    """Accuracy on the second half of y read from x by the first half's majority per x value."""
    half = len(x) // 2
    joint = torch.bincount(x[:half] * ny + y[:half], minlength=nx * ny).reshape(nx, ny)
    fallback = int(torch.bincount(y[:half], minlength=ny).argmax())
    guess = torch.where(joint.sum(1) > 0, joint.argmax(1), fallback)
    return float((guess[x[half:]] == y[half:]).double().mean())


def naive_bayes_read(ids: torch.Tensor, y: torch.Tensor, k: int, ny: int) -> float:
    """Accuracy on the second half of y from the first k ids together (naive Bayes)."""
    half, codes = len(y) // 2, int(ids.max()) + 1
    prior = torch.bincount(y[:half], minlength=ny).double() + 1
    score = prior.log().repeat(len(y) - half, 1)  # (n - half, ny)
    for p in range(k):
        joint = torch.bincount(ids[:half, p] * ny + y[:half], minlength=codes * ny)
        joint = joint.reshape(codes, ny).double() + 1  # add-one
        score += (joint / joint.sum(0)).log()[ids[half:, p]]
    return float((score.argmax(1) == y[half:]).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a stage-2 release folder")
    parser.add_argument("--num_images", type=int, default=8000)
    parser.add_argument("--positions", type=int, default=12, help="report the first P positions")
    parser.add_argument("--prefixes", type=int, nargs="+", default=[1, 6, 12, 36])
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    model = StyledVAEVQ.load(args.model, require_codebook=True).eval()
    data = ChatWorldDataset(model.config.image_size, args.num_images, 0, "train", labels=True)
    ids, labels = [], []
    with torch.no_grad():
        for start in range(0, args.num_images, 256):
            items = [data[i] for i in range(start, min(start + 256, args.num_images))]
            ids.append(model.tokenize(torch.stack([item.image for item in items])))
            labels.append(torch.stack([item.labels for item in items]))
    ids, labels = torch.cat(ids), torch.cat(labels)  # (n, N), (n, len(ATTRIBUTES))
    codes = model.codebook.config.num_codes
    rows: dict[str, dict] = {}
    for name in SCENE_ATTRIBUTES:
        y, ny = labels[:, ATTRIBUTES.index(name)], len(SCHEMA[name])
        chance = float(torch.bincount(y, minlength=ny).max() / len(y))
        rows[name] = {
            "values": ny,
            "entropy_bits": entropy(torch.bincount(y, minlength=ny)),
            "majority_chance": chance,
            "per_position": [
                {
                    "position": p,
                    "id_entropy_bits": entropy(torch.bincount(ids[:, p], minlength=codes)),
                    "information_bits": mutual_information(ids[:, p], y, codes, ny),
                    "read_from_this_id": majority_read(ids[:, p], y, codes, ny),
                }
                for p in range(args.positions)
            ],
            "read_from_first_k": {str(k): naive_bayes_read(ids, y, k, ny) for k in args.prefixes},
        }
    print(
        "| attribute (values, H bits, chance) | I(id_p; a) bits, p = 0..5 | read from id_p, "
        "p = 0..5 | read from the first " + "/".join(map(str, args.prefixes)) + " ids |"
    )
    print("|---|---|---|---|")
    for name, row in rows.items():
        first = row["per_position"][:6]
        info = " ".join(f"{r['information_bits']:.2f}" for r in first)
        read = " ".join(f"{100 * r['read_from_this_id']:.0f}" for r in first)
        k = " / ".join(f"{100 * v:.0f}" for v in row["read_from_first_k"].values())
        print(f"| {name} ({row['values']}, {row['entropy_bits']:.2f}, "
              f"{100 * row['majority_chance']:.0f}%) | {info} | {read}% | {k}% |")  # fmt: skip
    write_results(args.results, {
        "model": args.model, "num_images": args.num_images, "num_codes": codes,
        "per_position_codebooks": model.codebook.config.per_position, "attributes": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
