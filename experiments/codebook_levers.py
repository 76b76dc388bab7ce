"""Can the codebook alone, with stage 1 fixed, close the quantisation gap? Two k-means levers
against the plain per-position fit, on one demo run's stage 1 and stage-2 features, before any
fine-tune (the ids' PSNR as k-means leaves it):

- the decoder's metric: per position p, G_p = E[J_p^T J_p] (J_p the decoder's Jacobian with
  respect to token p's E features, estimated with random output probes on the fitted
  features); k-means on L_p^T f (G_p = L_p L_p^T), so a code's error is measured as the
  decoder's first-order pixel error;
- codes where the decoder is sensitive: positions ranked by trace(G_p), the top third given
  `hi` codes and the bottom third `lo`, the middle K (the same total, the same mean bits).

    HF_HUB_OFFLINE=1 python experiments/codebook_levers.py --run runs/demo-quick \\
        --results codebook_levers_quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq import StyledVAEVQ
from svq.codebook.kmeans import kmeans
from svq.data import ChatWorldDataset
from svq.eval.metrics import psnr


def sensitivity(model: StyledVAEVQ, features: torch.Tensor, probes: int) -> torch.Tensor:
    """features (n, N, E) -> (N, E, E): E[J_p^T J_p] per position, J_p = d decode / d f_p,
    from `probes` random output directions per batch of 64 (E_v[(J^T v)(J^T v)^T] = J^T J)."""
    n, positions, e = features.shape
    metric, count = torch.zeros(positions, e, e), 0
    for start in range(0, n, 64):
        f = features[start : start + 64].clone().requires_grad_(True)
        pixels = model.decode(f)
        for _ in range(probes):
            (g,) = torch.autograd.grad(pixels, f, torch.randn_like(pixels), retain_graph=True)
            metric += torch.einsum("bne,bnf->nef", g, g)
            count += len(f)
    return metric / count


def ids_psnr(
    model: StyledVAEVQ, val: torch.Tensor, codes: list[torch.Tensor], maps: list[torch.Tensor]
) -> float:
    """Held-out PSNR of the decode of each feature's nearest code, nearness measured after
    the position's map (features @ map)."""
    with torch.no_grad():
        features = model.encode(val)
        quantized = torch.empty_like(features)
        for p, (c, m) in enumerate(zip(codes, maps, strict=True)):
            nearest = torch.cdist(features[:, p] @ m, c @ m).argmin(1)
            quantized[:, p] = c[nearest]
        return float(psnr(model.decode(quantized), val).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a demo run (stage1, stage2)")
    parser.add_argument("--num_codes", type=int, default=256)
    parser.add_argument("--metric_images", type=int, default=256)
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--num_val_images", type=int, default=64)
    parser.add_argument("--kmeans_iters", type=int, default=30)
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = StyledVAEVQ.load(args.run / "stage1" / "model").eval().requires_grad_(False)
    features = torch.from_numpy(np.load(args.run / "stage2" / "features" / "features.npy"))
    size = model.config.image_size
    data = ChatWorldDataset(size, args.num_val_images, 0, "validation")
    val = torch.stack([data[i] for i in range(args.num_val_images)])
    metric = sensitivity(model, features[: args.metric_images], args.probes)
    trace = metric.diagonal(dim1=1, dim2=2).sum(-1)  # (N,)
    eig = torch.linalg.eigvalsh(metric)
    chol = torch.linalg.cholesky(metric)  # G = L L^T: |(f - c) @ L|^2 = (f - c)^T G (f - c)
    positions = features.shape[1]
    identity = [torch.eye(features.shape[2])] * positions

    def fit(k: int, p: int, m: torch.Tensor) -> torch.Tensor:
        mapped = kmeans((features[:, p] @ m).contiguous(), k, iters=args.kmeans_iters, seed=0)
        return torch.linalg.solve(m.T, mapped.centroids.T).T  # back to feature space

    rows = []
    started = time.perf_counter()
    with torch.no_grad():
        continuous = float(psnr(model.decode(model.encode(val)), val).mean())
    plain = [fit(args.num_codes, p, identity[p]) for p in range(positions)]
    rows.append({"codebook": "plain k-means", "codes": [args.num_codes] * positions,
                 "ids_psnr": ids_psnr(model, val, plain, identity)})  # fmt: skip
    weighted = [fit(args.num_codes, p, chol[p]) for p in range(positions)]
    rows.append({"codebook": "decoder metric", "codes": [args.num_codes] * positions,
                 "ids_psnr": ids_psnr(model, val, weighted, list(chol))})  # fmt: skip
    order = trace.argsort(descending=True).tolist()
    third = positions // 3
    for hi, lo in (
        (2 * args.num_codes, args.num_codes // 2),
        (4 * args.num_codes, args.num_codes // 4),
    ):
        ks = [args.num_codes] * positions
        for rank, p in enumerate(order):
            ks[p] = hi if rank < third else lo if rank >= positions - third else ks[p]
        books = [
            plain[p] if k == args.num_codes else fit(k, p, identity[p]) for p, k in enumerate(ks)
        ]
        rows.append({"codebook": f"codes by sensitivity ({hi} / {args.num_codes} / {lo})",
                     "codes": ks, "ids_psnr": ids_psnr(model, val, books, identity)})  # fmt: skip
    print(f"continuous {continuous:.2f} dB; decoder metric's eigenvalue ratio per position "
          f"(median) {float((eig[:, -1] / eig[:, 0]).median()):.0f}; trace max / min "
          f"{float(trace.max() / trace.min()):.1f}")  # fmt: skip
    print("| codebook | ids dB | gap dB |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['codebook']} | {r['ids_psnr']:.2f} | {continuous - r['ids_psnr']:.2f} |")
    write_results(args.results, {
        "run": str(args.run), "num_val_images": args.num_val_images,
        "metric_images": args.metric_images, "probes": args.probes,
        "continuous_psnr": continuous, "trace_per_position": trace.tolist(),
        "eigenvalue_ratio_per_position": (eig[:, -1] / eig[:, 0]).tolist(),
        "seconds": round(time.perf_counter() - started, 1), "rows": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
