"""Latency to generate one image with the same LLM: svq's 36 serial tokens + one VQ-head pass,
against writing a 16x16 grid as 256 serial tokens (LlamaGen / Janus style).

    python benchmarks/image_latency.py                    # CPU: the demo-sized Qwen2
    python benchmarks/image_latency.py --shapes demo,qwen2-0.5b   # add the 0.5B shape
    python benchmarks/image_latency.py --merge            # keep the other runs (shape, device)

Both routes run `model.generate` (greedy, KV cache, batch 1) on the same randomly initialised
Qwen2 LLM (`svq.llm.tiny` presets), extended with a K-code image vocabulary, from the same ~60-token
chat prompt. svq: the prompt ends with `<boi>`; the LLM writes 36 codes and `<eoi>` under
`ImageSpanLogitsProcessor` with the last hidden states kept (what `SVQChat.generate` does), then
the VQ head (default shape: width 512, 4 blocks) predicts the 16x16 spatial grid over 16,384
codes in one pass; or, from the 36 ids alone, the ids-to-grid model of the same width and depth
(`svq.ids_to_grid`, one pass). Baseline: 256 tokens, one per grid cell. Pixel decoders are
left out of both (each route needs one). On a CUDA machine the default shapes are demo and
qwen2-0.5b in bf16.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import RESULTS, machine, print_table, timed, write_results
from transformers import LogitsProcessorList

# Run as a script, benchmarks/ is first on the path: put the repository (the `llm` package)
# there too. (This file was benchmarks/llm.py, which shadowed that package.)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from svq.ids_to_grid import IdsToGrid, IdsToGridConfig
from svq.llm import ImageSpanLogitsProcessor, VQHead, VQHeadConfig, extend_llm
from svq.llm.tiny import chat_world_corpus, tiny_llm, train_tokenizer

GRID = (16, 16)  # the baseline's image: LlamaGen VQ-16 at 256 px
SPATIAL_CODES = 16384
# VQ head per LLM shape: VQHeadConfig's default (width 512, 4 blocks) for the 0.5B shape; a
# head in proportion to the 4.4M-parameter demo LLM for the demo shape.
HEADS = {"demo": {"width": 256, "depth": 2, "heads": 4}, "qwen2-0.5b": {}, "test": {}}


def prompt_ids(tokenizer, boi_id: int) -> torch.Tensor:
    messages = [
        {"role": "system", "content": "You are Lin, a traveller who loves sharing photos."},
        {"role": "user", "content": "I went to Huangshan in autumn, it was beautiful."},
        {"role": "assistant", "content": "I went in winter and went skiing!"},
        {"role": "user", "content": "Do you have a photo of you skiing?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return torch.tensor([[*tokenizer.encode(text, add_special_tokens=False), boi_id]])


def bench_shape(shape: str, device: str, dtype: torch.dtype, num_codes: int, repeats: int):
    tokenizer = train_tokenizer(chat_world_corpus(200))
    llm = tiny_llm(tokenizer, shape)
    codes = torch.randn(num_codes, 64)
    vocab = extend_llm(llm, tokenizer, codes, pad_to_multiple_of=64)
    llm = llm.to(device=device, dtype=dtype).eval()
    width = llm.config.hidden_size
    head_config = VQHeadConfig(
        llm_hidden=width, grid_size=GRID, codebook_size=SPATIAL_CODES, **HEADS[shape]
    )
    head = VQHead(head_config).to(device=device, dtype=dtype).eval()
    grid_config = IdsToGridConfig(
        num_codes=num_codes,
        per_position=False,
        grid_size=GRID,
        codebook_size=SPATIAL_CODES,
        width=head_config.width,
        depth=head_config.depth,
        heads=head_config.heads,
    )
    ids_to_grid = IdsToGrid(grid_config).to(device=device, dtype=dtype).eval()
    ids = prompt_ids(tokenizer, vocab.boi_id).to(device)
    processor = LogitsProcessorList([ImageSpanLogitsProcessor(vocab)])
    n = vocab.num_positions

    @torch.no_grad()
    def svq_tokens():
        return llm.generate(
            input_ids=ids,
            logits_processor=processor,
            do_sample=False,
            max_new_tokens=n + 1,
            output_hidden_states=-1,
            return_dict_in_generate=True,
        )

    @torch.no_grad()
    def svq_image():
        out = svq_tokens()
        steps = out.hidden_states  # the states at the 36 code tokens, as SVQChat reads them
        hidden = torch.cat([step[-1] for step in steps[1 : n + 1]], dim=1)  # (1, 36, D)
        return head.predict(hidden)

    @torch.no_grad()
    def ids_to_grid_image():
        # the same generate call as the head's route (hidden states kept), so the two routes
        # differ only in their grid pass
        tokens = svq_tokens().sequences[:, -(n + 1) : -1]  # the 36 codes, <eoi> left off
        return ids_to_grid.generate(vocab.tokens_to_codes(tokens))

    @torch.no_grad()
    def ids_to_grid_only():
        return ids_to_grid.generate(torch.randint(num_codes, (1, n), device=device))

    @torch.no_grad()
    def vq_head_only():
        return head.predict(torch.randn(1, n, width, device=device, dtype=dtype))

    @torch.no_grad()
    def baseline():
        cells = GRID[0] * GRID[1]
        return llm.generate(
            input_ids=ids, do_sample=False, max_new_tokens=cells, min_new_tokens=cells
        )

    assert svq_image().shape == (1, GRID[0] * GRID[1])
    assert ids_to_grid_image().shape == (1, GRID[0] * GRID[1])
    assert baseline().shape[1] == ids.shape[1] + GRID[0] * GRID[1]
    seconds = {
        "svq_tokens": timed(svq_tokens, repeats),
        "vq_head": timed(vq_head_only, repeats),
        "svq_image": timed(svq_image, repeats),
        "ids_to_grid": timed(ids_to_grid_only, repeats),
        "ids_to_grid_image": timed(ids_to_grid_image, repeats),
        "serial_256": timed(baseline, repeats),
    }
    params = sum(p.numel() for p in llm.parameters())
    head_params = sum(p.numel() for p in head.parameters())
    return {
        "llm": f"{shape} ({params / 1e6:.1f}M params)",
        "vq_head": f"width {head_config.width} x {head_config.depth} ({head_params / 1e6:.1f}M)",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_tokens": ids.shape[1],
        "image_vocab": num_codes,
        "svq_36_tokens_ms": round(1e3 * seconds["svq_tokens"], 1),
        "vq_head_pass_ms": round(1e3 * seconds["vq_head"], 1),
        "svq_image_ms": round(1e3 * seconds["svq_image"], 1),
        "serial_256_ms": round(1e3 * seconds["serial_256"], 1),
        "speedup": round(seconds["serial_256"] / seconds["svq_image"], 2),
        "ids_to_grid_pass_ms": round(1e3 * seconds["ids_to_grid"], 1),
        "ids_to_grid_image_ms": round(1e3 * seconds["ids_to_grid_image"], 1),
        "speedup_ids_to_grid": round(seconds["serial_256"] / seconds["ids_to_grid_image"], 2),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cuda = torch.cuda.is_available()
    parser.add_argument(
        "--shapes", default="demo,qwen2-0.5b" if cuda else "demo", help="svq.llm.tiny presets"
    )
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--codes", type=int, default=4096, help="svq image vocabulary size K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (shared machines)")
    parser.add_argument("--merge", action="store_true", help="keep the file's other runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    runs = [
        bench_shape(shape, args.device, dtype, args.codes, args.repeats)
        for shape in args.shapes.split(",")
    ]
    previous = RESULTS / "image_latency.json"
    if args.merge and previous.is_file():
        here = {(run["llm"], run["device"]) for run in runs}
        old = json.loads(previous.read_text())["runs"]
        kept = [r for r in old if (r["llm"], r["device"]) not in here]
        runs = kept + runs
    columns = [
        "llm", "vq_head", "device", "dtype", "svq_36_tokens_ms", "vq_head_pass_ms", "svq_image_ms",
        "serial_256_ms", "speedup", "ids_to_grid_image_ms", "speedup_ids_to_grid",
    ]  # fmt: skip
    print_table(runs, columns)
    figures = {"grid": list(GRID), "spatial_codes": SPATIAL_CODES, "runs": runs}
    path = write_results("image_latency", figures)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
