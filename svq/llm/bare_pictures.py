"""Bare pictures: every picture the assistant draws in the training chats, as a chat of its own
with nothing else in it (no persona, no request, no words): what the LLM would draw unasked.

    bare = bare_pictures(data)  # ChatData over the same image table as `data`

Trained beside the chats (`describe_per_step` with `describe_bare_pictures`), they give the
LLM the unconditional branch that classifier-free guidance leans away from
(`svq.llm.guidance`), as LlamaGen and Janus drop the condition of a share of their pictures.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .sft_data import ChatData


def bare_picture_chat(picture: dict | torch.Tensor) -> list[dict]:
    """An empty system prompt (a template's default would be a condition of its own) and one
    assistant turn holding one picture: an image part, or its (N,) codebook ids."""
    part = picture if isinstance(picture, dict) else {"type": "image", "ids": picture}
    return [{"role": "system", "content": ""}, {"role": "assistant", "content": [part]}]


def bare_pictures(data: ChatData) -> ChatData:
    """One chat per picture of every assistant message of `data` (`bare_picture_chat`)."""
    chats = []
    for chat in data.chats:
        for i, message in enumerate(chat["messages"]):
            content = message["content"]
            if message["role"] != "assistant" or isinstance(content, str):
                continue
            pictures = [p for p in content if p["type"] == "image"]
            for k, part in enumerate(pictures):
                chats.append(
                    {"id": f"{chat['id']}-bare{i}-{k}", "messages": bare_picture_chat(part)}
                )
    if not chats:
        raise ValueError("bare pictures: the chats have no assistant picture")
    return replace(data, chats=chats)
