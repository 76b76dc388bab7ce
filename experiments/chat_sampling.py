"""How the chat's pictures are decoded, side by side on one trained model: greedy, and the
codes sampled (text greedy) at several temperatures and cuts (`ImageSpanSampler`). Same
held-out dialogues, judge and seed for each; scores following, identity, diversity and the
pictures against their own words. With --pin_identity START STOP each setting runs again with
those positions pinned (`evaluate_chat(pin_identity=...)`: from the dialogue's last assistant
picture, else a reference picture of the persona), as "NAME+pins".

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/chat_sampling.py \\
        --model runs/demo/sft/model --judge svq/eval/judges/world64 --num_dialogues 128 \\
        --out runs/chat-sampling --results chat_sampling_standard

Writes benchmarks/results/NAME.json: per setting the cited chat figures (svq.demo_record).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from svq.demo_record import chat_figures
from svq.eval.chat_eval import evaluate_chat
from svq.eval.judge import load_judge
from svq.llm import SVQChat
from svq.provenance import REPO, provenance

# name -> SVQChat.generate options (None: greedy)
SETTINGS: dict[str, dict[str, float | int] | None] = {
    "greedy": None,
    "t0.5": {"image_temperature": 0.5},
    "t0.7": {"image_temperature": 0.7},
    "t1.0": {"image_temperature": 1.0},
    "t1.0-top_k20": {"image_temperature": 1.0, "image_top_k": 20},
    "t1.0-top_p0.9": {"image_temperature": 1.0, "image_top_p": 0.9},
    # classifier-free guidance of the codes (`ImageGuidance`; the model must have learned bare
    # pictures), greedy and sampled
    "g1.5": {"image_guidance": 1.5},
    "g2": {"image_guidance": 2.0},
    "g3": {"image_guidance": 3.0},
    "g5": {"image_guidance": 5.0},
    "g3-t1.0": {"image_guidance": 3.0, "image_temperature": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an SVQChat folder (RUN/sft/model)")
    parser.add_argument("--judge", required=True, help="a judge folder")
    parser.add_argument("--num_dialogues", type=int, default=128)
    parser.add_argument("--image_decoder", default=None, help="vq_head or svq (the model's)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument(
        "--pin_identity",
        type=int,
        nargs=2,
        metavar=("START", "STOP"),
        help="also run each setting with positions START..STOP-1 pinned",
    )
    parser.add_argument(
        "--unpinned",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the settings without pins too",
    )
    parser.add_argument("--out", required=True, help="folder for each setting's chat_eval.json")
    parser.add_argument("--results", required=True, help="NAME of benchmarks/results/NAME.json")
    args = parser.parse_args()
    origin = provenance()
    chat = SVQChat.from_pretrained(args.model).eval()
    judge = load_judge(args.judge)
    pins = [None] * args.unpinned
    if args.pin_identity:
        pins.append(list(range(*args.pin_identity)))
    figures = {}
    for setting, pin in itertools.product(args.settings, pins):
        name = setting + ("+pins" if pin else "")
        torch.manual_seed(0)
        report = evaluate_chat(
            chat, judge, num_dialogues=args.num_dialogues, seed=0, out_dir=Path(args.out) / name,
            batch_size=32, image_decoder=args.image_decoder, pin_identity=pin,
            **(SETTINGS[setting] or {}),
        )  # fmt: skip
        figures[name] = {"generate": SETTINGS[setting], "pin_identity": pin,
                         **chat_figures(report)}  # fmt: skip
        shown = ("following", "identity_within_dialogue", "identity_vs_persona")
        print(name, json.dumps({k: figures[name][k] for k in shown}), flush=True)
    record = {**origin, "model": args.model, "image_decoder": args.image_decoder,
              "num_dialogues": args.num_dialogues, "settings": figures}  # fmt: skip
    path = REPO / "benchmarks" / "results" / f"{args.results}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
