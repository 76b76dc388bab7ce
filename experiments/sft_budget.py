"""Chat SFT variants side by side on one demo run's tokenizers: the same data, seed, held-out
dialogues and judge; each variant changes a few `svq/train/llm_sft.py` options. Two at a time
(one thread each) so a pair shares the machine's load; each records its own train time.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/sft_budget.py \\
        --run runs/demo-standard --out runs/sft-budget --results sft_budget \\
        --variants base lr3e-3

`--base`: the options the variants change: `sft_budget` (the standard demo's SFT when these
runs began: 400 steps at 1e-3), or `quick` / `standard`, a demo budget's own `sft` stage
(`svq/configs/demo_<budget>.yaml`; a variant with "stage": "baseline" starts from its
`baseline` stage instead).

Writes (and merges into) benchmarks/results/NAME.json: per variant its options, train and wall
seconds, the chat figures of its final evaluation (`svq/train/llm_sft.scores`), following with
its interval and per attribute, and understanding per question, with the commit and machine it
ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from svq.demo import flags, load_budget
from svq.provenance import REPO, provenance

# Each variant: options of svq/train/llm_sft.py over its base (`--base`, `base_options`).
STANDARD = {"max_steps": 400, "learning_rate": 1e-3, "warmup_steps": 30}
TEXT300 = {
    "pretrain_steps": 300,
    "pretrain_captions": 0,
    "pretrain_batch_size": 8,
    "pretrain_dialogues": 4000,
}
CONSTRAINED = {"constrained_lm_loss": True}
DRAWN8 = {"describe_per_step": 8, "describe_drawn_turns": True}
ASKED = {"asked_first": True, "when_first": True, "projector": {"reads": "all"}}
NOVQ = {"image_decoder": "svq", "vq_loss_weight": 0.0}
SOFT = {**NOVQ, "code_target_temperature": 0.5}
BARE8 = {"describe_per_step": 8, "describe_captions": False, "describe_bare_pictures": True}
VARIANTS: dict[str, dict[str, object]] = {
    "base": {},
    "lr3e-3": {"learning_rate": 3e-3},
    "steps800": {"max_steps": 800},
    "steps1200": {"max_steps": 1200},
    "pretrain": {"pretrain_steps": 400},
    "pretrain-text": {"pretrain_steps": 400, "pretrain_captions": 0},
    # half the requests ask for a place and a season (default: a third)
    "seasons2x": {
        "max_steps": 1200,
        "request_kinds": ["place_season", "place_season", "activity", "place_time"],
    },
    # image-span tokens are 96% of the 1,200-step model's LM loss on its training chats (text
    # 4%, a quarter of that the season word): weigh them down against the text
    "img0.1": {"max_steps": 1200, "image_token_loss_weight": 0.1},
    "img0.1-vq0.1": {"max_steps": 1200, "image_token_loss_weight": 0.1, "vq_loss_weight": 0.1},
    "img0.03": {"max_steps": 1200, "image_token_loss_weight": 0.03},
    # what the demo LLM lacks to read the asked season: depth, or a faster learning rate
    "demo8": {"max_steps": 1200, "tiny_preset": "demo8"},
    "lr2e-3": {"max_steps": 1200, "learning_rate": 2e-3},
    # the season tokens' tied embeddings grow alike: the output layer apart, at 400 steps
    "untied": {"tiny_preset": "demo-untied"},
    # 2,000 chats are seen ~5 times in 1,200 steps: does the model memorise them instead of
    # learning to read the request? 8,000 (each seen ~1.2 times)
    "data8000": {"max_steps": 1200, "num_train_dialogues": 8000},
    # every opening teaches the reply to say a season the user did *not* name (the assistant
    # went in another): the assistant going in the same one, or the user naming none
    "open-same": {"max_steps": 1200, "opening_season": "same"},
    "open-unnamed": {"max_steps": 1200, "opening_season": "unnamed"},
    # the same pair on another seed (initial weights and chat order; the same chats)
    "open-same-seed1": {"max_steps": 1200, "opening_season": "same", "seed": 1},
    "steps1200-seed1": {"max_steps": 1200, "seed": 1},
    # the standard demo's SFT since it trains under bf16 (1,600 steps), and beside it the same
    # with one-turn "what is in this photo?" -> caption chats mixed in (svq.llm.describe_data):
    # a photo question labels one attribute, a caption all of them
    "bf16-1600": {"max_steps": 1600, "opening_season": "same", "bf16": True},
    # the projector mixes the tokens before its per-token MLP (ProjectorConfig reads "all")
    "joint-1600": {
        "max_steps": 1600,
        "opening_season": "same",
        "bf16": True,
        "projector": {"reads": "all"},
    },
    "describe1000": {
        "max_steps": 1600,
        "opening_season": "same",
        "bf16": True,
        "describe_photos": 1000,
    },
    "describe3000": {
        "max_steps": 1600,
        "opening_season": "same",
        "bf16": True,
        "describe_photos": 3000,
    },
    # the serial baseline (pictures as the spatial VQ's ids), as the standard demo trains it
    "baseline1200": {"max_steps": 1200, "image_tokenizer": "spatial"},
    "baseline-img0.1": {
        "max_steps": 1200,
        "image_tokenizer": "spatial",
        "image_token_loss_weight": 0.1,
    },
    # batches of chats of similar length (less padding: a shorter step), on a demo budget's base
    "grouped": {"group_by_length": True},
    "baseline": {"stage": "baseline"},
    "baseline-grouped": {"stage": "baseline", "group_by_length": True},
    # language pre-training on the world's talk only, then the budget's SFT (its data needs no
    # picture tokenizer: as a stage of its own a demo could run it beside stage 1; not built)
    "text300": TEXT300,
    "baseline-text300": {"stage": "baseline", **TEXT300},
    # the quick budget's steps: the standard demo's answers and projector alone; half the batch
    # for twice the steps (about the same time); twice the learning rate
    "asked": ASKED,
    "baseline-asked": {"stage": "baseline", **ASKED},
    "batch4": {"per_device_train_batch_size": 4, "max_steps": 480},
    "lr4e-3": {"learning_rate": 4e-3},
    # a demo budget's own SFT on another seed (initial weights and chat order; the same chats)
    "seed1": {"seed": 1},
    "baseline-seed1": {"stage": "baseline", "seed": 1},
    "seed2": {"seed": 2},
    "baseline-seed2": {"stage": "baseline", "seed": 2},
    # half the per-step described photos ask one of the world's photo questions instead of the
    # caption (`describe_questions`), on seeds 0 and 1
    "questions0.5": {"describe_questions": 0.5},
    "questions0.5-seed1": {"describe_questions": 0.5, "seed": 1},
    # the per-step batch also drawing from the chats' picture-drawing turns, cut out with the
    # persona and the request (`describe_drawn_turns`), on both routes and seeds
    "drawn": {"describe_drawn_turns": True},
    "drawn-seed1": {"describe_drawn_turns": True, "seed": 1},
    "baseline-drawn": {"stage": "baseline", "describe_drawn_turns": True},
    "baseline-drawn-seed1": {"stage": "baseline", "describe_drawn_turns": True, "seed": 1},
    # each token's cross-entropy over what generation allows there (`constrained_lm_loss`): a
    # code against its position's codes, text against text; with language pre-training, whose
    # text labels then never push the image rows down
    "constrained": CONSTRAINED,
    "baseline-constrained": {"stage": "baseline", **CONSTRAINED},
    "text300-constrained": {**TEXT300, **CONSTRAINED},
    "baseline-text300-constrained": {"stage": "baseline", **TEXT300, **CONSTRAINED},
    # the quick budget has no per-step batch: 8 drawn turns and described photos each step
    "drawn8": DRAWN8,
    "baseline-drawn8": {"stage": "baseline", **DRAWN8},
    "drawn8-constrained": {**DRAWN8, **CONSTRAINED},
    # the pictures painted from the ids by the tokenizer, the VQ head's loss off: the LLM's
    # trunk trained on the LM loss alone
    "svq-novq": {"image_decoder": "svq", "vq_loss_weight": 0.0},
    # the codes after each picture's first 6 (which the stage-1 attribute loss makes say the
    # scene) weigh less in the LM loss: the steps spent on the ids that follow the request
    "suffix0.25": {"image_suffix_loss_weight": 0.25},
    "suffix0.1": {"image_suffix_loss_weight": 0.1},
    # each code's label spread over its codebook neighbours (`code_target_temperature`): a
    # short SFT teaches each region of feature space, not each code alone; painted from the
    # ids as `svq-novq`
    "soft0.5-novq": SOFT,
    "soft1-novq": {**NOVQ, "code_target_temperature": 1.0},
    "svq-novq-seed1": {**NOVQ, "seed": 1},
    "soft0.5-novq-seed1": {**SOFT, "seed": 1},
    "svq-novq-seed2": {**NOVQ, "seed": 2},
    "soft0.5-novq-seed2": {**SOFT, "seed": 2},
    # bare pictures (no persona, no request) as the per-step batch: the unconditional branch
    # of classifier-free guidance (`image_guidance`, scored by experiments/chat_sampling.py)
    "bare8-novq": {**NOVQ, **BARE8},
    "bare8-novq-seed1": {**NOVQ, **BARE8, "seed": 1},
    "bare8-novq-steps800": {**NOVQ, **BARE8, "max_steps": 800},
    "svq-novq-steps800": {**NOVQ, "max_steps": 800},
    "soft0.5-novq-steps800": {**SOFT, "max_steps": 800},
    # longer language pre-training (each dialogue seen once) before the same SFT: does an LLM
    # that has learned the world's talk follow at the quick budget's 240 SFT steps?
    "text1000-constrained": {
        **TEXT300,
        "pretrain_steps": 1000,
        "pretrain_dialogues": 8000,
        **CONSTRAINED,
    },
    "text2000-constrained": {
        **TEXT300,
        "pretrain_steps": 2000,
        "pretrain_dialogues": 16000,
        **CONSTRAINED,
    },
}
BASES = ("sft_budget", "quick", "standard")


def base_options(base: str, variant: dict[str, object]) -> dict[str, object]:
    """The options a variant changes: STANDARD, or a demo budget's sft (or baseline) stage."""
    if base == "sft_budget":
        return {**STANDARD, "num_train_dialogues": 2000}
    stage = dict(load_budget(base)[str(variant.get("stage", "sft"))])
    if stage.pop("config") != "llm_sft_world.yaml":
        raise SystemExit(f"demo_{base}.yaml's SFT is not llm_sft_world.yaml")
    return stage


def variant_options(base: str, name: str) -> dict[str, object]:
    """The variant's options, its base's overridden by its own."""
    variant = VARIANTS[name]
    changes = {k: v for k, v in variant.items() if k != "stage"}
    return {**base_options(base, variant), **changes}


def command(run: Path, out: Path, name: str, num_val: int, base: str) -> list[str]:
    options = {
        **variant_options(base, name),
        "output_dir": out / name,
        "svq_path": run / "stage2" / "model",
        "spatial_vq_path": run / "vq" / "model",
        "judge_path": run / "judge",
        "cache_dir": run / "sft" / "image_cache",  # the pictures' cache serves both routes
        "num_val_dialogues": num_val,
        "eval_batch_size": 32,
        "eval_steps": 0,
        "save_steps": 100000,
        "report_to": "none",
        "overwrite_output_dir": True,
    }
    return [sys.executable, "-m", "svq.train.llm_sft", "llm_sft_world", *flags(options)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a demo run folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for each variant")
    parser.add_argument("--results", required=True, help="NAME of benchmarks/results/NAME.json")
    parser.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=VARIANTS)
    parser.add_argument("--base", default="sft_budget", choices=BASES, help="see the docstring")
    parser.add_argument("--num_val_dialogues", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--skip_existing", action="store_true",
        help="collect, without running again, the variants whose OUT/NAME/summary.json exists",
    )  # fmt: skip
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    origin = provenance()  # the code the variants run (each variant's folder keeps its own)
    args.out.mkdir(parents=True, exist_ok=True)
    pending, running = list(args.variants), []
    if args.skip_existing:
        pending = [n for n in pending if not (args.out / n / "summary.json").is_file()]
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = (args.out / f"{name}.log").open("w")
            cmd = command(args.run, args.out, name, args.num_val_dialogues, args.base)
            (args.out / name).mkdir(parents=True, exist_ok=True)
            (args.out / name / "provenance.json").write_text(json.dumps(origin))
            running.append((name, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)))
        time.sleep(5)
        for name, process in list(running):
            if process.poll() is None:
                continue
            running.remove((name, process))
            if process.returncode != 0:
                raise SystemExit(f"variant {name} failed: see {args.out / name}.log")
    path = REPO / "benchmarks" / "results" / f"{args.results}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"variants": {}}
    for name in args.variants:
        summary = json.loads((args.out / name / "summary.json").read_text())
        report = json.loads((args.out / name / "chat_eval.json").read_text())
        following = report["generation_following"]
        record["variants"][name] = {
            **json.loads((args.out / name / "provenance.json").read_text()),
            "base": args.base,
            "options": variant_options(args.base, name),
            "num_val_dialogues": args.num_val_dialogues,
            **{k: summary[k] for k in ("steps", "train_seconds", "wall_seconds", "lm_loss")},
            "pretrain_seconds": summary.get("pretrain_seconds"),
            "figures": summary["validation"],
            "following": {k: following[k] for k in ("mean", "ci", "chance", "best_constant")},
            "following_per_attribute": {
                attribute: {k: v for k, v in row.items() if k in ("value", "ci", "n", "chance")}
                for attribute, row in following["per_attribute"].items()
            },
            "understanding_per_question": report["understanding"]["per_question"],
        }
        print(name, json.dumps(record["variants"][name]["figures"]), flush=True)
    record["run"] = str(args.run)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
