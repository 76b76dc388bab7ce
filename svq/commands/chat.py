"""`svq chat --model DIR`: talk with an image-speaking LLM (an SVQChat folder, e.g. the demo's
RUN/sft/model) in the terminal. Image paths typed in a message are shown to the model; the
pictures it writes are saved as PNGs (as written, and a >= 128 px nearest-neighbour view) and
their paths printed.

    you> I went to Huangshan in autumn! photos/me.png
    assistant> I went in winter and went skiing!
      [picture: chat/reply_1_0.png; view: chat/reply_1_0_view.png]
    /reset starts a new conversation, /quit (or end of input) leaves.

--image-guidance S > 1 leans the pictures on the request (classifier-free guidance, for a model
trained with bare pictures: svq.llm.guidance).
With --reference PICTURE --pin-tokens START STOP every picture it writes keeps the reference's
codes at positions START..STOP-1 (for a tokenizer trained with the person on those tokens, e.g.
the standard demo's 6 12: the reference's look, in the scene the talk asks for).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def parse_message(line: str) -> dict[str, Any]:
    """A typed line -> a user message: words that are image paths become image parts (they
    must exist), the rest is the text."""
    parts, words = [], []
    for word in line.split():
        if word.lower().endswith(IMAGE_SUFFIXES):
            if Path(word).is_dir():
                raise IsADirectoryError(f"image {word} is a folder, not an image file")
            if not Path(word).is_file():
                raise FileNotFoundError(f"image {word} does not exist")
            parts.append({"type": "image", "path": word})
        else:
            words.append(word)
    if words:
        parts.append({"type": "text", "text": " ".join(words)})
    return {"role": "user", "content": parts}


def converse(
    chat, stdin: TextIO, stdout: TextIO, out: Path, system: str | None, **generate: Any
) -> int:
    """The read-reply loop; returns the number of replies. Pictures go to out/."""
    from svq.data import load_image_file  # a shown image is checked before the model sees it
    from svq.images import upscale_nearest

    def fresh() -> list[dict[str, Any]]:
        return [{"role": "system", "content": system}] if system else []

    messages, replies = fresh(), 0
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            return replies
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            messages = fresh()
            stdout.write("(new conversation)\n")
            continue
        try:
            message = parse_message(line)
            for part in message["content"]:
                if part["type"] == "image":
                    load_image_file(part["path"])
        except (OSError, ValueError) as error:
            stdout.write(f"error: {error}\n")
            continue
        messages.append(message)
        reply = chat.chat(messages, **generate)
        replies += 1
        texts = []
        for index, part in enumerate(reply["content"]):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                path = out / f"reply_{replies}_{index}.png"  # as written: can be shown back
                view = out / f"reply_{replies}_{index}_view.png"  # >= 128 px, to look at
                out.mkdir(parents=True, exist_ok=True)
                part["image"].save(path)
                upscale_nearest(part["image"]).save(view)
                texts.append(f"\n  [picture: {path}; view: {view}]")
        stdout.write("assistant> " + " ".join(texts).strip() + "\n")
        messages.append(reply)


def run(args: argparse.Namespace) -> int:
    import torch

    from svq.llm import SVQChat

    torch.set_num_threads(args.threads)
    chat = SVQChat.from_pretrained(args.model)
    if args.temperature > 0 and args.image_temperature > 0:
        raise SystemExit("svq chat: --temperature samples every token; pass it or "
                         "--image-temperature, not both")  # fmt: skip
    sampling: dict = {}
    if args.temperature > 0:
        sampling = {"do_sample": True, "temperature": args.temperature}
    elif args.image_temperature > 0:
        sampling = {"image_temperature": args.image_temperature, "image_top_k": args.image_top_k}
    if args.image_guidance is not None:
        if args.image_guidance <= 0:
            raise SystemExit(f"svq chat: --image-guidance must be > 0, got {args.image_guidance}")
        sampling["image_guidance"] = args.image_guidance
    if (args.reference is None) != (args.pin_tokens is None):
        raise SystemExit("svq chat: --reference and --pin-tokens go together")
    if args.reference is not None:
        from svq.llm import pins_from

        ids = chat.image_ids(args.reference)  # errors name the file
        sampling["pinned_ids"] = [pins_from(ids, range(*args.pin_tokens))]
    converse(
        chat, sys.stdin, sys.stdout, Path(args.out), args.system,
        max_new_tokens=args.max_new_tokens, **sampling,
    )  # fmt: skip
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="talk with an image-speaking LLM in the terminal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="an SVQChat folder (e.g. RUN/sft/model)")
    p.add_argument("--out", default="chat", help="folder for the pictures it writes")
    p.add_argument("--system", help="a system prompt (e.g. the persona)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="every token; 0: greedy")
    p.add_argument(
        "--image-temperature", type=float, default=0.0,
        help="the pictures' codes only, text greedy; 0: greedy (follows the request best: "
        "docs/RESULTS_sft.md)",
    )  # fmt: skip
    p.add_argument("--image-top-k", type=int, default=None, help="with --image-temperature")
    p.add_argument(
        "--image-guidance", type=float, default=None,
        help="classifier-free guidance scale of the pictures' codes (1: none; default: the "
        "model's); the model must have been trained with bare pictures",
    )  # fmt: skip
    p.add_argument("--reference", help="a picture whose --pin-tokens every picture keeps")
    p.add_argument(
        "--pin-tokens", type=int, nargs=2, metavar=("START", "STOP"),
        help="token positions START..STOP-1 taken from --reference (e.g. 6 12: the person)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.set_defaults(run=run)
