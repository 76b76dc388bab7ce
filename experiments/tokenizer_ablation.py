"""The tokenizer's levers, each alone and combined: continuous and id PSNR, judge, ordering.

    OMP_NUM_THREADS=1 python experiments/tokenizer_ablation.py --variants conv32 "conv32 +noise"
    OMP_NUM_THREADS=1 python experiments/tokenizer_ablation.py --steps 4 --variants conv32 \\
        --val 16 --feature_images 64 --codes 8           # a smoke run

Every variant sees identical chat-world pictures (training seed 0, the same order), starts
from torch.manual_seed(0) and trains with one recipe: MSE on pixels, AdamW (0.9, 0.99), no
weight decay, lr 2e-3 one-cycle (5% warm-up; `--lr`), gradient clip 1, one thread. Then, in
eval mode (the EMA weights where the variant keeps one), on held-out validation pictures (world
seed 1):

- PSNR from the continuous features, and from the ids of a k-means codebook fitted on the
  features of the first `--feature_images` training pictures (per position and shared, K
  codes), before any decoder fine-tune (stage 2's fine-tune can only close the gap);
- the shipped judge's accuracy (of the picture size) per attribute on both reconstructions;
- the prefix curve (first k tokens, the rest the learned drop token or the mean feature), with
  the judge on the first 6 tokens' decodes, and the PSNR cost of swapping each block of 6
  tokens with another image's;
- where the person and the scene live: with each block of 6 tokens taken from another
  picture, how often the judge reads the other picture's value (over the pictures where the
  two differ), averaged over the identity attributes and over place / season / time of day.

`--bf16` trains under bf16 autocast on the CPU (weights, optimiser and loss stay fp32; the
evaluation runs in fp32).

Results go to benchmarks/results/NAME.json (one file per invocation, `--results`); run two
invocations side by side to use both cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import commit, write_results

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.data.render import render_tensor
from svq.data.sampler import world_record
from svq.data.schema import IDENTITY_ATTRIBUTES as IDENTITY
from svq.data.schema import SCHEMA
from svq.eval.judge import load_judge, shipped_judge
from svq.eval.ordering import (
    default_fill,
    group_ablation,
    prefix_curve,
    replace_tokens,
    swapped,
)
from svq.train.attribute_loss import (
    AttributeReadout,
    attribute_loss,
    attribute_spans,
    swap_identity,
)

BATCH, SIZE, BF16, LR = 32, 32, False, 2e-3  # --batch, --size, --bf16, --lr
SCENE = ("place", "season", "time_of_day")

# name -> (preset, config overrides, training options)
#   noise: (start_ratio, ramp_ratio) of the head's noise schedule (noise_scale from the config)
#   l1: weight of an L1 term beside the MSE
#   ema: decay of an EMA of the weights (evaluated instead of the raw weights)
#   attr: weight of the auxiliary attribute loss; attr_tokens: the prefix its head reads;
#   attr_identity: > 0, the identity attributes read the next this many tokens instead
#   attr_swap: > 0, that many pictures per step take another's identity tokens, are decoded and
#     encoded again, and the read-out must name the donor's person (stage 1's
#     attribute_swap_images)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "tiny": ("tiny", {}, {}),
    "conv32": ("conv32", {}, {}),
    "conv32 +noise0.3": ("conv32", {"noise_scale": 0.3}, {"noise": (0.2, 0.3)}),
    "conv32 +noise0.6": ("conv32", {"noise_scale": 0.6}, {"noise": (0.2, 0.3)}),
    "conv32 +ema": ("conv32", {}, {"ema": 0.995}),
    "conv32 +attr": ("conv32", {}, {"attr": 0.1, "attr_tokens": 36}),
    "conv32 +attr6": ("conv32", {}, {"attr": 0.1, "attr_tokens": 6}),
    "conv32 +nested": ("conv32", {"token_dropout": "nested", "token_dropout_prob": 0.5}, {}),
    "conv32 +attr6x3": ("conv32", {}, {"attr": 0.3, "attr_tokens": 6}),
    "conv32 +attr6 +noise0.3": (
        "conv32",
        {"noise_scale": 0.3},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32 +prefix +nested0.2 +attr6": (
        "conv32",
        {"conv_reads": "prefix", "token_dropout": "nested", "token_dropout_prob": 0.2},
        {"attr": 0.1, "attr_tokens": 6},
    ),
    "conv32 +prefix +nested0.2 +attr6 +noise0.3": (
        "conv32",
        {
            "conv_reads": "prefix",
            "token_dropout": "nested",
            "token_dropout_prob": 0.2,
            "noise_scale": 0.3,
        },
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32 +l1": ("conv32", {}, {"l1": 1.0}),
    # capacity: a decoder twice as wide, residual blocks in the encoder's stem, 32-dim tokens
    "conv32 +attr6 +noise0.3 +wide": (
        "conv32",
        {"noise_scale": 0.3, "decoder_channels": [256, 128, 64, 32]},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32 +attr6 +noise0.3 +stem1": (
        "conv32",
        {"noise_scale": 0.3, "stem_blocks": 1},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32 +attr6 +noise0.3 +dim32": (
        "conv32",
        {"noise_scale": 0.3, "token_dim": 32},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +stem1": (
        "conv32-ordered",
        {"stem_blocks": 1},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +wide": (
        "conv32-ordered",
        {"decoder_channels": [256, 128, 64, 32]},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    # the conv decoder's 4x4 input made from tokens (conv_input), not only a constant
    "conv32-ordered +attr6 +input_first": (
        "conv32-ordered",
        {"conv_input": "first"},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +input_all": (
        "conv32-ordered",
        {"conv_input": "all"},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +input_all +skip": (
        "conv32-ordered",
        {"conv_input": "all", "conv_skip": True},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +input_all +noise0.6": (
        "conv32-ordered",
        {"conv_input": "all", "noise_scale": 0.6},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +input_all +stem1": (
        "conv32-ordered",
        {"conv_input": "all", "stem_blocks": 1},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-ordered +attr6 +input_all +dim8": (
        "conv32-ordered",
        {"conv_input": "all", "token_dim": 8},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    # the character on conv32-map: the attribute read-out on every token, or weighted 3x
    "conv32-map +attr36": ("conv32-map", {}, {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 36}),
    "conv32-map +attr6x3": ("conv32-map", {}, {"noise": (0.2, 0.3), "attr": 0.3, "attr_tokens": 6}),
    # capacity at the finest resolutions of conv32-map's decoder (16 channels at 32 x 32)
    "conv32-map +fine32": (
        "conv32-map",
        {"decoder_channels": [128, 64, 32, 32]},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32-map +fine64": (
        "conv32-map",
        {"decoder_channels": [128, 64, 64, 32]},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    # token-made maps at finer resolutions of conv32-map's decoder too (conv_input_levels):
    # 4x4 and 8x8 / up to 16x16 / up to 32x32
    **{
        f"conv32-map +maps{levels}": (
            "conv32-map",
            {"conv_input_levels": levels},
            {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
        )
        for levels in (2, 3, 4)
    },
    # the person's attributes read from tokens 6-11 of their own (the scene's from 0-5)
    "conv32-map +attr6 +identity6": (
        "conv32-map",
        {},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6, "attr_identity": 6},
    ),
    # ... and the person's tokens swapped between pictures: the swap must carry the person
    "conv32-map +attr6 +identity6 +swap8": (
        "conv32-map",
        {},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6, "attr_identity": 6, "attr_swap": 8},
    ),
    # conv32-map's own recipe (= "conv32-ordered +attr6 +input_all +dim8"), the control of the above
    "conv32-map +attr6": ("conv32-map", {}, {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6}),
    # 64 px (--size 64 --batch 16)
    "conv64-ordered +attr6 +identity6": (
        "conv64-ordered",
        {},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6, "attr_identity": 6},
    ),
    "conv64-map +attr6 +identity6": (
        "conv64-map",
        {},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6, "attr_identity": 6},
    ),
    # the bottleneck's normalisation and noise, on the standard demo's recipe: one scale per
    # picture instead of per token (head "rms"), and half the noise
    "conv64-map +attr6 +identity6 +rms": (
        "conv64-map",
        {"head": "rms"},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6, "attr_identity": 6},
    ),
    "conv64-map +attr6 +identity6 +noise0.15": (
        "conv64-map",
        {"noise_scale": 0.15},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6, "attr_identity": 6},
    ),
    "small": ("small", {}, {}),
    "conv64": ("conv64", {}, {}),
    "conv64 +attr6": ("conv64", {}, {"attr": 0.1, "attr_tokens": 6}),
    "conv64-ordered +attr6 +input_all": (
        "conv64-ordered",
        {"conv_input": "all"},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv64-ordered +attr6 +input_all +dim16": (
        "conv64-ordered",
        {"conv_input": "all", "token_dim": 16},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv64-map +attr6 +dim8": (
        "conv64-map",
        {"token_dim": 8},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv64-map +attr36": ("conv64-map", {}, {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 36}),
    # token-made maps at 4x4, 8x8 and 16x16, on conv64-map (8-dim tokens) and on conv64-ordered
    # (32-dim tokens, whose start map is otherwise the constant)
    "conv64-map +maps3": (
        "conv64-map",
        {"conv_input_levels": 3},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv64-ordered +maps3": (
        "conv64-ordered",
        {"conv_input": "all", "conv_input_levels": 3},
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv64 +prefix +nested0.2 +attr6 +noise0.3": (
        "conv64",
        {
            "conv_reads": "prefix",
            "token_dropout": "nested",
            "token_dropout_prob": 0.2,
            "noise_scale": 0.3,
        },
        {"noise": (0.2, 0.3), "attr": 0.1, "attr_tokens": 6},
    ),
    "conv32 +prefix": ("conv32", {"conv_reads": "prefix"}, {}),
    "conv32 +prefix +nested": (
        "conv32",
        {"conv_reads": "prefix", "token_dropout": "nested", "token_dropout_prob": 0.5},
        {},
    ),
}


def noise_gain(step: int, steps: int, schedule: tuple[float, float] | None) -> float:
    if schedule is None:
        return 1.0
    start, ramp = schedule[0] * steps, schedule[1] * steps
    return 0.0 if step <= start else min(1.0, (step - start) / max(ramp, 1))


def records(seed: int, split: str, start: int, count: int) -> list:
    return [world_record(seed, split, start + j) for j in range(count)]


def train(name: str, steps: int) -> tuple[StyledVAEVQ, dict]:
    preset, overrides, opts = VARIANTS[name]
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset(preset, **overrides)).train()
    cfg = model.config
    attr = None
    if opts.get("attr"):
        classes = [len(values) for values in SCHEMA.values()]
        spans = attribute_spans(opts["attr_tokens"], opts.get("attr_identity", 0))
        attr = AttributeReadout(opts["attr_tokens"], cfg.token_dim, classes, spans)
    params = list(model.parameters()) + (list(attr.parameters()) if attr else [])
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=steps, pct_start=0.05
    )
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(opts["ema"])
        )
        if opts.get("ema")
        else None
    )
    seconds = 0.0
    for step in range(1, steps + 1):
        batch = records(0, "train", (step - 1) * BATCH, BATCH)
        images = render_tensor(batch, SIZE)
        start = time.perf_counter()
        model.encoder.head.noise_gain = noise_gain(step, steps, opts.get("noise"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
            out = model(images)
            logits = attr(out.features) if attr is not None else None
        loss = F.mse_loss(out.recon.float(), images)
        if opts.get("l1"):
            loss = loss + opts["l1"] * F.l1_loss(out.recon.float(), images)
        if attr is not None:
            labels = torch.tensor([r.labels() for r in batch])
            loss = loss + opts["attr"] * attribute_loss([z.float() for z in logits], labels)
        if opts.get("attr_swap"):
            span = (opts["attr_tokens"], opts["attr_tokens"] + opts["attr_identity"])
            mixed, mixed_labels = swap_identity(out.features, labels, span, opts["attr_swap"])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
                seen = attr(model.encode(model.decode(mixed)))
            loss = loss + opts["attr"] * attribute_loss([z.float() for z in seen], mixed_labels)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{name}: loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(model)
        seconds += time.perf_counter() - start
        if step % 250 == 0:
            print(f"{name}: step {step} loss {loss.item():.4f} {seconds:.0f}s", flush=True)
    final = ema.module if ema is not None else model
    final.eval()
    info = {
        "preset": preset,
        "overrides": overrides,
        "train_options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "params": sum(p.numel() for p in final.parameters()),
        "train_s": round(seconds, 1),
        "s_per_step": round(seconds / steps, 4),
    }
    return final, info


@torch.no_grad()
def decode_all(model: StyledVAEVQ, features: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.decode(features[i : i + 128]) for i in range(0, len(features), 128)])


@torch.no_grad()
def encode_all(model: StyledVAEVQ, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.encode(images[i : i + 128]) for i in range(0, len(images), 128)])


def psnr(recon: torch.Tensor, images: torch.Tensor) -> tuple[float, float]:
    """Mean per-picture PSNR (dB, peak-to-peak 2) and its standard error."""
    mse = ((recon.clamp(-1, 1) - images) ** 2 / 4).flatten(1).mean(1)
    values = -10 * torch.log10(mse)
    return round(values.mean().item(), 2), round((values.std() / len(values) ** 0.5).item(), 3)


def judged(judge, recon: torch.Tensor, labels: torch.Tensor) -> dict:
    acc = judge.named(judge.accuracy(recon.clamp(-1, 1), labels))
    acc = {k: round(v, 3) for k, v in acc.items()}
    acc["scene_min"] = min(acc[a] for a in SCENE)
    acc["identity_mean"] = round(sum(acc[a] for a in IDENTITY) / len(IDENTITY), 3)
    return acc


@torch.no_grad()
def evaluate(model: StyledVAEVQ, args: argparse.Namespace, judge) -> dict:
    val_records = records(1, "validation", 0, args.val)
    images = render_tensor(val_records, SIZE)
    labels = torch.tensor([r.labels() for r in val_records])
    features = encode_all(model, images)
    recon = decode_all(model, features)
    result = {"continuous": {"psnr": psnr(recon, images), "judge": judged(judge, recon, labels)}}
    train_images = render_tensor(records(0, "train", 0, args.feature_images), SIZE)
    fit = encode_all(model, train_images)  # (n, N, E)
    for per_position in (True, False):
        started = time.perf_counter()
        book = Codebook.fit(fit, args.codes, per_position=per_position, iters=30, seed=0)
        ids = book.quantize(features)
        recon_ids = decode_all(model, book.lookup(ids))
        used = [len(torch.unique(ids[:, p])) for p in range(ids.shape[1])]
        rel = ((book.lookup(ids) - features) ** 2).sum(-1).mean() / features.var(0).sum(-1).mean()
        result["ids_per_position" if per_position else "ids_shared"] = {
            "psnr": psnr(recon_ids, images),
            "judge": judged(judge, recon_ids, labels),
            "codes_used_per_position_min_median_max": [
                min(used),
                sorted(used)[len(used) // 2],
                max(used),
            ],
            "relative_quantisation_error": round(rel.item(), 4),
            "fit_s": round(time.perf_counter() - started, 1),
        }
    n = features.shape[1]
    ks = [k for k in (0, 1, 2, 4, 6, 12, 18, 24, 30, 36) if k <= n]
    curve = prefix_curve(model, images, ks=ks, features=features)
    result["prefix_psnr"] = {row["k"]: round(row["psnr"], 2) for row in curve}
    fill = default_fill(model, features)
    prefix6 = decode_all(model, replace_tokens(features, min(6, n), n, fill))
    result["judge_first6"] = judged(judge, prefix6, labels)
    blocks = [(s, min(s + 6, n)) for s in range(0, n, 6)]
    swaps = group_ablation(model, images, groups=blocks, mode="swap", features=features)
    result["block_swap_drop_db"] = {f"{r['start']}-{r['end']}": round(r["drop_db"], 2)
                                    for r in swaps}  # fmt: skip
    result["block_transfer"] = block_transfer(model, judge, features, labels, blocks)
    return result


@torch.no_grad()
def block_transfer(model, judge, features, labels, blocks) -> dict:
    """Per block: with its tokens from the next picture (a donor), the share of pictures whose
    decode the judge reads as the donor's value, over the pictures where the two differ; the
    mean over the identity attributes and over the scene's place / season / time of day."""
    donor = labels.roll(1, dims=0)
    index = {name: a for a, name in enumerate(SCHEMA)}
    out = {}
    for start, end in blocks:
        read = judge.predict(
            decode_all(model, replace_tokens(features, start, end, swapped(features))).clamp(-1, 1)
        )
        share = {}
        for name in (*IDENTITY, *SCENE):
            a = index[name]
            differ = donor[:, a] != labels[:, a]
            share[name] = (read[differ, a] == donor[differ, a]).float().mean().item()
        out[f"{start}-{end}"] = {
            "identity_follows_donor": round(sum(share[a] for a in IDENTITY) / len(IDENTITY), 3),
            "scene_follows_donor": round(sum(share[a] for a in SCENE) / len(SCENE), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", required=True, choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--val", type=int, default=512, help="validation pictures")
    parser.add_argument("--feature_images", type=int, default=4000, help="k-means fit pictures")
    parser.add_argument("--codes", type=int, default=256, help="K (per position and shared)")
    parser.add_argument("--size", type=int, default=32, help="picture side (the judge's too)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--results", default="tokenizer_ablation", help="results/NAME.json")
    parser.add_argument(
        "--bf16", action="store_true", help="train under bf16 autocast (weights stay fp32)"
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="the one-cycle peak")
    args = parser.parse_args()
    global BATCH, SIZE, BF16, LR
    BATCH, SIZE, BF16, LR = args.batch, args.size, args.bf16, args.lr
    torch.set_num_threads(1)
    judge = load_judge(shipped_judge(SIZE))
    results = {}
    for name in args.variants:
        model, info = train(name, args.steps)
        info.update(evaluate(model, args, judge))
        results[name] = info
        print(name, info, flush=True)
        path = write_results(
            args.results,
            {
                "commit": commit(),
                "setting": f"{SIZE} px chat world (train seed 0; {args.val} validation pictures, "
                f"seed 1), batch {BATCH}, {args.steps} steps, MSE, AdamW (0.9, 0.99) wd 0, lr {LR} "
                "one-cycle 5% warm-up, clip 1, torch.manual_seed(0), one thread, "
                f"{'bf16 autocast' if BF16 else 'fp32'} training; k-means "
                f"K={args.codes} on {args.feature_images} training pictures' features, 30 "
                "iterations, no decoder fine-tune; train_s excludes rendering",
                "results": results,
            },
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
