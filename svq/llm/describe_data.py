"""Described photos: one-turn chats that teach the LLM to read a picture's features.

    data = load_chats("world", num_dialogues=2000)
    data = with_described_photos(data, count=1000, lang="en", seed=0)

Each added chat: the user shares one of the chats' own pictures and asks what is in it; the
assistant answers with the picture's caption (`svq.data.caption`: every judged attribute, in the
world's words). A photo question inside a dialogue labels one attribute of one picture; a
caption labels all of them: the feature-alignment data of LLaVA's first stage, here mixed into
the SFT (`with_described_photos`, in place of dialogues at a fixed step count) or beside it
(`described_photos`: a second batch each step, the dialogues' exposure unchanged). The
pictures are the chats' own, so the image cache (keyed by the pictures) is shared
and no picture is encoded twice. Only world pictures (records) have captions; a chat file's
pictures are left out.
"""

from __future__ import annotations

import random
from dataclasses import replace

from svq.data import WorldRecord, caption
from svq.data.dialogues import PHRASES, photo_answer

from .sft_data import IMAGE_INDEX, ChatData

# what the user asks, per language
DESCRIBE_PROMPTS = {"en": "What is in this photo?", "zh": "这张照片里有什么？"}


def described_photo(index: int, record: WorldRecord, lang: str, when_first: bool = False) -> dict:
    """One chat: the user's photo (picture `index` of the image table) and the question, the
    assistant's caption of `record` in `lang` (`when_first`: the scene's season first, as the
    chats' answers with the world option of that name)."""
    if lang not in DESCRIBE_PROMPTS:
        raise ValueError(f"lang must be one of {sorted(DESCRIBE_PROMPTS)}, got {lang!r}")
    photo = {"type": "image", IMAGE_INDEX: index}
    question = {"type": "text", "text": DESCRIBE_PROMPTS[lang]}
    return {
        "id": f"describe-{index}-{lang}",
        "messages": [
            {"role": "user", "content": [photo, question]},
            {"role": "assistant", "content": caption(record, lang, when_first)},
        ],
    }


def asked_photo(index: int, record: WorldRecord, lang: str, topic: str, share: str) -> dict:
    """One chat: the user shares picture `index` as in the world's dialogues ("Look at my
    photo!") and asks the world's photo question on `topic`; the assistant gives the true
    answer about `record`."""
    t = PHRASES[lang]
    photo = {"type": "image", IMAGE_INDEX: index}
    return {
        "id": f"asked-{index}-{topic}-{lang}",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": share}, photo,
                                         {"type": "text", "text": t["questions"][topic]}]},
            {"role": "assistant", "content": photo_answer(topic, record, lang)},
        ],
    }  # fmt: skip


def with_described_photos(
    data: ChatData,
    count: int,
    lang: str = "en",
    seed: int = 0,
    when_first: bool = False,
    questions: float = 0.0,
) -> ChatData:
    """`data` with `count` described-photo chats added after its own (-1: one per world
    picture; 0: `data` itself). The pictures are drawn without replacement in a seeded order;
    lang "en", "zh" or "mixed" (every fourth in Chinese, as the world's mixed chats);
    `questions`: the share of them asked one of the world's photo questions instead (see
    `described_photos`)."""
    if count == 0:
        return data
    added = described_photos(data, count, lang, seed, when_first, questions).chats
    return replace(data, chats=[*data.chats, *added])


def described_photos(
    data: ChatData,
    count: int = -1,
    lang: str = "en",
    seed: int = 0,
    when_first: bool = False,
    questions: float = 0.0,
) -> ChatData:
    """Only the described-photo chats of `with_described_photos` (count >= 1 or -1), over the
    same image table as `data` (its cache serves both): the SFT's `describe_per_step` batches.

    questions: the share of the pictures (drawn per picture, seeded) that the user shares as in
    the world's dialogues and asks one of the world's photo questions about (the topic drawn
    uniformly), answered with the truth (`asked_photo`), instead of asking for the caption. A
    caption labels every attribute; a question labels one, in the form the dialogues ask it.
    0: captions only, the same chats as before the option."""
    if lang not in ("en", "zh", "mixed"):
        raise ValueError(f"lang must be 'en', 'zh' or 'mixed', got {lang!r}")
    if not 0 <= questions <= 1:
        raise ValueError(f"questions must be a share in [0, 1], got {questions}")
    pictures = [k for k, r in enumerate(data.images) if isinstance(r, WorldRecord)]
    if not pictures:
        raise ValueError(
            "described photos need world pictures (their captions); these chats have none"
        )
    if count == 0 or count < -1 or count > len(pictures):
        raise ValueError(
            f"describe count must be -1 or 1..{len(pictures)} (the chats' world pictures), "
            f"got {count}"
        )
    rng = random.Random(seed)
    rng.shuffle(pictures)
    chosen = pictures if count == -1 else pictures[:count]
    added = []
    for n, k in enumerate(chosen):
        language = lang if lang != "mixed" else ("zh" if n % 4 == 3 else "en")
        if questions and rng.random() < questions:  # no draw at 0: the chats as before
            t = PHRASES[language]
            topic, share = rng.choice(sorted(t["questions"])), rng.choice(t["share"])
            added.append(asked_photo(k, data.images[k], language, topic, share))
        else:
            added.append(described_photo(k, data.images[k], language, when_first))
    return replace(data, chats=added)
