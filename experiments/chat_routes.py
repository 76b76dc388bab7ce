"""One trained chat model, its written pictures decoded two ways, scored side by side: the VQ
head + spatial VQ decoder ("vq_head") and the tokenizer's own decoder on the written ids
("svq"). The LLM writes the same ids in both (greedy decoding), so a difference is the
decoder's; no difference says the ids themselves decide the figure.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/chat_routes.py \\
        --model runs/demo/sft/model --judge svq/eval/judges/world64 --num_dialogues 320 \\
        --out runs/chat-routes --results chat_routes_standard

Writes benchmarks/results/NAME.json: per route the cited chat figures (svq.demo_record).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from svq.demo_record import chat_figures
from svq.eval.judge import load_judge
from svq.eval.report import run_chat_eval
from svq.provenance import REPO, provenance

ROUTES = ("vq_head", "svq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an SVQChat folder (RUN/sft/model)")
    parser.add_argument("--judge", required=True, help="a judge folder (svq/eval/judges/worldNN)")
    parser.add_argument("--num_dialogues", type=int, default=320)
    parser.add_argument("--out", required=True, help="folder for each route's chat_eval.json")
    parser.add_argument("--results", required=True, help="NAME of benchmarks/results/NAME.json")
    args = parser.parse_args()
    judge = load_judge(args.judge)
    figures = {}
    for route in ROUTES:
        path = run_chat_eval(
            Path(args.model), judge, Path(args.out) / route, args.num_dialogues,
            image_decoder=route,
        )  # fmt: skip
        figures[route] = chat_figures(json.loads(path.read_text()))
        print(route, json.dumps(figures[route]["following"]), flush=True)
    record = {**provenance(), "model": args.model, "routes": figures}
    path = REPO / "benchmarks" / "results" / f"{args.results}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
