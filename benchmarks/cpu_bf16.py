"""Training step time under bf16 autocast against fp32 on this CPU, for the demos' models.

    OMP_NUM_THREADS=1 python benchmarks/cpu_bf16.py            # writes the results
    OMP_NUM_THREADS=1 python benchmarks/cpu_bf16.py --steps 2  # a sanity run

One training step (forward, loss, backward, clip 1, AdamW) per model, each model once in fp32
and once under `torch.autocast("cpu", torch.bfloat16)` (weights, optimiser state and the loss
stay fp32: what `bf16: true` gives a stage through accelerate). The models are the demos' own:
the stage-1 tokenizers at their picture size and batch, the quick demo's spatial VQ, and the
"demo" LLM on a batch of token sequences the length of the chat world's dialogues. All models
step in turn (round robin), so a load change on this shared machine hits them alike; the figure
is the median step and the fp32 / bf16 ratio. Whether the CPU computes bf16 natively (AMX,
AVX512-BF16) is recorded: without it, bf16 is emulated and slower. Beside them, the time to draw
the quick stage 1's batch of pictures (its loader's work, the same in either precision).
Writes results/cpu_bf16.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from common import print_table, write_results
from transformers import Qwen2Config, Qwen2ForCausalLM

from svq import StyledVAEVQ, SVQConfig
from svq.data.render import render_tensor
from svq.data.sampler import world_record
from svq.llm.tiny import PRESETS as LLM_PRESETS
from svq.provenance import native_cpu_bf16
from svq.spatial_vq import SpatialVQ, SpatialVQConfig

# The quick demo's spatial VQ (svq/configs/demo_quick.yaml's model_overrides).
QUICK_VQ = {"image_size": 32, "channels": 16, "channel_mult": [1, 2, 2], "z_channels": 32,
            "codebook_size": 256, "dead_code_steps": 64}  # fmt: skip
LLM_VOCAB = 12_288  # ~the demo's: its text tokens plus 36 x 256 image codes
LLM_BATCH, LLM_LENGTH = 8, 384  # the SFT's batch; about a dialogue's length in tokens


def tokenizer_step(preset: str, batch: int) -> tuple[torch.nn.Module, Callable]:
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset(preset)).train()
    size = model.config.image_size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return model, lambda: F.mse_loss(model(images).recon.float(), images)


def vq_step(batch: int) -> tuple[torch.nn.Module, Callable]:
    torch.manual_seed(0)
    model = SpatialVQ(SpatialVQConfig.from_preset("tiny", **QUICK_VQ)).train()
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def loss() -> torch.Tensor:
        out = model(images)
        return F.mse_loss(out.recon.float(), images) + out.codebook_loss + out.commitment_loss

    return model, loss


def llm_step() -> tuple[torch.nn.Module, Callable]:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=LLM_VOCAB, tie_word_embeddings=True, **LLM_PRESETS["demo"])
    model = Qwen2ForCausalLM(config).train()
    ids = torch.randint(0, LLM_VOCAB, (LLM_BATCH, LLM_LENGTH), generator=torch.Generator())
    return model, lambda: model(input_ids=ids, labels=ids).loss.float()


def timed_step(model: torch.nn.Module, loss: Callable, bf16: bool) -> Callable[[], float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and mode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    builders = {
        "conv32-map (stage 1, quick), batch 32": partial(tokenizer_step, "conv32-map", 32),
        "conv64-ordered (stage 1, standard), batch 16": partial(
            tokenizer_step, "conv64-ordered", 16
        ),
        "conv64-map, batch 16": partial(tokenizer_step, "conv64-map", 16),
        "spatial VQ (quick), batch 16": partial(vq_step, 16),
        f"demo LLM, {LLM_BATCH} x {LLM_LENGTH} tokens": llm_step,
    }
    steps = {}
    for name, build in builders.items():
        for bf16 in (False, True):
            model, loss = build()  # a fresh model per mode: the same start
            steps[name, bf16] = timed_step(model, loss, bf16)
            steps[name, bf16]()  # warm-up
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in steps}
    for _ in range(args.steps):
        for key, step in steps.items():
            times[key].append(step())
    rows = []
    for name in builders:
        fp32, bf16 = (statistics.median(times[name, mode]) for mode in (False, True))
        rows.append({"model": name, "fp32_s": round(fp32, 4), "bf16_s": round(bf16, 4),
                     "speedup": round(fp32 / bf16, 2)})  # fmt: skip
    draw = []
    for step in range(args.steps):
        start = time.perf_counter()
        render_tensor([world_record(0, "train", step * 32 + j) for j in range(32)], 32)
        draw.append(time.perf_counter() - start)
    print_table(rows, ["model", "fp32_s", "bf16_s", "speedup"])
    print(f"drawing 32 pictures at 32 px: {statistics.median(draw):.4f} s")
    native = native_cpu_bf16()
    path = write_results(
        "cpu_bf16",
        {
            "native_bf16": native,
            "setting": f"1 thread, median of {args.steps} steps per model and mode, taken in "
            "turn; step = forward, loss, backward, clip 1, AdamW; bf16 = torch.autocast on "
            "the CPU (fp32 weights, optimiser and loss)",
            "rows": rows,
            "draw_32_pictures_32px_s": round(statistics.median(draw), 4),
        },
    )
    print(f"native bf16: {native}; wrote {path}")


if __name__ == "__main__":
    main()
