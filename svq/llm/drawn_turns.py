"""Drawn turns: every turn of the training chats in which the assistant draws a picture, cut
out of its dialogue as a chat of its own.

    turns = drawn_turns(data)  # ChatData over the same image table as `data`

Each excerpt keeps the chat's system prompt (the persona), the user's message just before the
reply (the request, remark and all) and the assistant's reply with its picture; the turns
before them are left out. A request's words ("What about the beach in summer?") are copied
into the reply's ("Yes! Here I am on a summer day, ...") once per dialogue turn; as a second
batch each step (`describe_per_step` with `describe_drawn_turns`) the copy is seen without the
talk around it, as the described photos teach the reading direction.
"""

from __future__ import annotations

from dataclasses import replace

from .sft_data import ChatData


def _draws(message: dict) -> bool:
    content = message["content"]
    return (
        message["role"] == "assistant"
        and not isinstance(content, str)
        and any(p["type"] == "image" for p in content)
    )


def drawn_turns(data: ChatData) -> ChatData:
    """One chat per assistant message with a picture whose previous message is the user's:
    [system prompt (when the chat has one), that user message, the assistant message]."""
    excerpts = []
    for chat in data.chats:
        messages = chat["messages"]
        system = [m for m in messages[:1] if m["role"] == "system"]
        for i, message in enumerate(messages):
            if i > 0 and _draws(message) and messages[i - 1]["role"] == "user":
                excerpts.append(
                    {"id": f"{chat['id']}-turn{i}", "messages": [*system, messages[i - 1], message]}
                )
    if not excerpts:
        raise ValueError("drawn turns: the chats have no assistant picture after a user message")
    return replace(data, chats=excerpts)
