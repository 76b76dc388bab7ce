"""Chat metrics: does an image-speaking LLM draw what the talk asks for, keep its
own look across its photos, and answer right about the user's photos?

    from svq.eval.chat_eval import evaluate_chat
    report = evaluate_chat(chat, judge, num_dialogues=40, seed=0, out_dir="runs/eval-chat")

Held-out dialogues: chats of the chat world's "validation" split (seen identities, new chats)
and "heldout" split (identities never seen in training), alternately, with exact ground truth.
Each assistant turn is generated (greedy) from the true conversation before it: the user's
pictures as features, the assistant's earlier pictures as the tokens of its true photos.

Each assistant turn gives a `chat_scores.DialogueRecord`; `chat_scores.chat_scores` turns them
into figures with chance levels, controls and 95% bootstrap intervals over dialogues:

- generation_following: the judge reads each generated picture; a turn's k-th picture is
  compared with what the talk pinned for the k-th true photo of that turn (`requested`): the
  request's place and season, activity, or place and time of day; for the opening photo, the
  place the user named. Scored over the pictures drawn; pictures_drawn is the share of
  requested pictures that were drawn at all.
- identity_consistency: the judge's identity attributes (hair, skin, shirt, hat, glasses) of
  the assistant's generated pictures: agreement within a dialogue and with the persona's look,
  each corrected by the same agreement across dialogues of different personas.
- diversity: distinct id sequences and judge readings among the pictures drawn.
- understanding: for each turn answering a question about a user photo, the answer's value is
  read by `answer_value` and compared with the photo's true attribute (see its docstring for
  the matching rule), beside the blind majority answer. Needs no judge.
- replies: each reply's text read back with the world's grammar (`svq.data.grammar`): well
  formed, on form (the sentence forms of the true reply), text following (the request's pinned
  values that the reply's words state) and, judged, each picture against the scene the words
  before it state. See `chat_scores.reply_scores`.
- image_token_validity: complete image spans (`<boi>`, 36 codes, `<eoi>`) / spans begun.
- judge: its gate (`svq.eval.gate`) at the chat's picture size; judged figures only if it passed.

`pin_identity` (positions, e.g. range(6, 12) for a tokenizer trained with the person on tokens
6-11) measures identity supplied rather than recalled: every generated picture gets those
codes (`llm.PinnedCodes`) from the last assistant picture in its prompt, or, in a dialogue's
first assistant turn, from a reference picture of the persona (`persona_reference`: its look in
a scene drawn for the reference alone, never one of the dialogue's photos).

Generated and shown pictures are written to OUT_DIR/images/ and the result, with every
transcript (paths relative to OUT_DIR), to OUT_DIR/chat_eval.json.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from svq.data import IDENTITY_ATTRIBUTES, SCHEMA, Identity, WorldRecord, render
from svq.data.captions import words
from svq.data.dialogues import PHRASES
from svq.data.grammar import parse_reply, stated_values
from svq.data.sampler import sample_layout, sample_scene
from svq.data.writer import iter_split
from svq.llm.logits import pins_from
from svq.progress import progress_bar

from .chat_scores import FOLLOWED, Answer, DialogueRecord, Reply, Request, chat_scores
from .gate import GateResult, judge_gate

REPORT = "chat_eval.json"


# --- held-out dialogues ----------------------------------------------------------------------


@dataclass
class EvalDialogue:
    id: str
    lang: str
    messages: list[dict[str, Any]]  # image parts carry "attributes" (the truth) and "record"
    persona: Identity  # the assistant's look


def eval_dialogues(
    num_dialogues: int,
    seed: int,
    lang: str = "en",
    splits: Sequence[str] = ("validation", "heldout"),
) -> list[EvalDialogue]:
    """`num_dialogues` chats taken from `splits` in turn (the first of each, then the second...).
    Exactly the chats `svq world` writes for those splits."""
    streams = [iter_split(seed, split, 10**12, lang) for split in splits]
    out = []
    for stream in itertools.cycle(streams):
        if len(out) == num_dialogues:
            break
        _, records, chat = next(stream)
        parts = _image_parts(chat["messages"])
        for part, record in zip(parts, records, strict=True):
            part["record"] = record
        persona = Identity(**chat["persona"]["identity"])
        out.append(EvalDialogue(chat["id"], lang, chat["messages"], persona))
    return out


def persona_reference(dialogue: EvalDialogue, seed: int) -> WorldRecord:
    """A reference photo of the dialogue's persona: its look in a scene and layout drawn for
    the reference alone (from `seed` and the dialogue's id)."""
    rng = random.Random(f"svq-persona-reference/{seed}/{dialogue.id}")
    return WorldRecord(dialogue.persona, sample_scene(rng), sample_layout(rng))


def last_assistant_ids(messages: Sequence[dict[str, Any]]) -> torch.Tensor | None:
    """The ids of the last assistant picture among resolved `messages`, or None."""
    for message in reversed(messages):
        if message["role"] != "assistant" or isinstance(message["content"], str):
            continue
        for part in reversed(message["content"]):
            if part["type"] == "image" and part.get("ids") is not None:
                return part["ids"]
    return None


def _image_parts(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        p
        for m in messages
        if not isinstance(m["content"], str)
        for p in m["content"]
        if p["type"] == "image"
    ]


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in content if p["type"] == "text")


# --- what the talk asks for ------------------------------------------------------------------


def requested(messages: Sequence[dict[str, Any]], index: int, lang: str = "en") -> list[dict]:
    """For assistant turn `index` of a chat-world dialogue, one dict per true photo of that
    turn: the scene attributes the talk pinned for it ({} when none).

    A request ("What about {place} in {season}?", "... of you {activity}?", "... from {place}
    {time}?") pins what it names, recognised by rendering each request form with the photo's
    true values and finding it in the user's message. The opening photo is pinned to the place
    the user named; the opening's second photo (the assistant's own choice) to nothing.
    """
    photos = [p["attributes"] for p in _image_parts([messages[index]])]
    if not photos:
        return []
    user = _text(messages[index - 1]) if index > 0 else ""
    t, w = PHRASES[lang], words(lang)
    truth = photos[0]
    forms = {
        "place_season": ("place", "season"),
        "activity": ("activity",),
        "place_time": ("place", "time_of_day"),
    }
    for kind, names in forms.items():
        text = t["requests"][kind].format(
            place=w["place_name"][truth["place"]],
            season=w["season"][truth["season"]],
            activity=w["activity"][truth["activity"]],
            time=t["time"][truth["time_of_day"]],
        )
        if text in user:
            return [{name: truth[name] for name in names}] + [{} for _ in photos[1:]]
    pins = {"place": truth["place"]} if w["place_name"][truth["place"]] in user else {}
    return [pins] + [{} for _ in photos[1:]]


def words_per_picture(content: Any, lang: str = "en") -> list[dict[str, str]]:
    """For each picture of an assistant message, the scene values its words state: the text
    parts since the previous picture, read with the world's grammar ({} where they do not
    parse)."""
    if isinstance(content, str):
        return []
    out, pending = [], []
    for part in content:
        if part["type"] == "text":
            pending.append(part["text"])
        elif part["type"] == "image":
            values = stated_values(parse_reply(" ".join(pending), lang))
            out.append({k: v for k, v in values.items() if k in FOLLOWED})
            pending = []
    return out


def _forms(parsed: Sequence[Any] | None) -> list[str] | None:
    return None if parsed is None else [s.form for s in parsed]


# --- reading answers -------------------------------------------------------------------------


def question_topic(text: str, lang: str = "en") -> str | None:
    """Which of the chat world's questions about a photo `text` asks, or None."""
    for topic, question in PHRASES[lang]["questions"].items():
        if question in text:
            return topic
    return None


def truth_value(topic: str, attributes: dict[str, str]) -> str:
    """The true answer value of `topic` for a photo ("hair": "style|colour")."""
    if topic == "hair":
        return f"{attributes['hair_style']}|{attributes['hair_colour']}"
    return attributes[topic]


def answer_phrases(topic: str, lang: str = "en") -> dict[str, list[str]]:
    """Every value of `topic` and the phrases that say it: the chat world's own answer
    sentence, then the value's words (e.g. "winter", "taking photos", "curly red hair")."""
    answers, w = PHRASES[lang]["answers"][topic], words(lang)
    en = lang == "en"
    if topic == "hair":
        return {
            f"{style}|{colour}": [
                answers.format(hair=w["hair_style"][style].format(c=w["hair_colour"][colour])),
                w["hair_style"][style].format(c=w["hair_colour"][colour]),
            ]
            for style in SCHEMA["hair_style"]
            for colour in SCHEMA["hair_colour"]
        }
    if topic in ("activity", "shirt_colour"):
        table = w[topic]
        slot = "activity" if topic == "activity" else "colour"
        return {v: [answers.format(**{slot: table[v]}), table[v]] for v in SCHEMA[topic]}
    keywords = {
        "season": {v: w["season"][v] for v in SCHEMA["season"]},
        "place": {
            v: w["place_name"][v].removeprefix("the ") for v in SCHEMA["place"]
        },
        "time_of_day": dict(
            zip(
                SCHEMA["time_of_day"],
                ("daytime", "sunset", "night") if en else ("白天", "日落", "晚上"),
                strict=True,
            )
        ),
        "sea_of_clouds": {"no": "no", "yes": "yes"} if en else {"no": "没有", "yes": "有"},
        "glasses": {"none": "not wearing glasses", "glasses": "glasses",
                    "sunglasses": "sunglasses"} if en else
                   {"none": "没戴眼镜", "glasses": "戴着眼镜", "sunglasses": "墨镜"},
        "hat": {"none": "not wearing a hat", "cap": "cap", "beanie": "beanie"} if en else
               {"none": "没戴帽子", "cap": "鸭舌帽", "beanie": "毛线帽"},
    }[topic]  # fmt: skip
    return {v: [answers[v], keywords[v]] for v in SCHEMA[topic]}


def answer_value(topic: str, text: str, lang: str = "en") -> str | None:
    """The value an answer says, or None when it says none or is ambiguous.

    Matching rule: every phrase of every value (`answer_phrases`) is looked for in the answer
    (case-insensitive; in English as whole words, so "glasses" is not found in "sunglasses",
    nor "no" in "not"); the longest phrase found decides (so "not wearing glasses" beats
    "glasses"); two values tied at that length -> None.
    """
    found: dict[str, int] = {}
    for value, phrases in answer_phrases(topic, lang).items():
        for phrase in phrases:
            if phrase and _contains(text, phrase, lang):
                found[value] = max(found.get(value, 0), len(phrase))
    if not found:
        return None
    best = max(found.values())
    winners = [v for v, n in found.items() if n == best]
    return winners[0] if len(winners) == 1 else None


def _contains(text: str, phrase: str, lang: str) -> bool:
    if lang != "en":
        return phrase in text
    pattern = r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)"
    return re.search(pattern, text.lower()) is not None


def score_answer(topic: str, text: str, attributes: dict[str, str], lang: str = "en") -> float:
    """1.0 when the answer says the photo's true value of `topic`, else 0.0."""
    return float(answer_value(topic, text, lang) == truth_value(topic, attributes))


# --- the evaluation --------------------------------------------------------------------------


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))
    return array.permute(2, 0, 1) / 127.5 - 1.0  # (3, H, W) in [-1, 1]


def _gate(judge: Any | None, gate: GateResult | None, size: int) -> GateResult | None:
    """The judge's gate at the chat's picture size (computed unless given)."""
    if judge is None:
        return None
    return gate if gate is not None else judge_gate(judge, size)


def _judge_note(judge: Any | None, gate: GateResult | None) -> dict[str, Any]:
    if judge is None:
        return {"status": "none", "reason": "no judge: judged figures are not computed"}
    return {"status": "passed" if gate.passed else "refused", **gate.to_dict()}


def judge_pictures(judge: Any, pictures: Sequence[Image.Image]) -> list[dict[str, str]]:
    """The judge's reading of each picture: {attribute: value name}."""
    if not pictures:
        return []
    schema = judge.config.schema
    out: list[dict[str, str] | None] = [None] * len(pictures)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, picture in enumerate(pictures):
        by_size[picture.size].append(i)
    for indices in by_size.values():
        batch = torch.stack([_pil_to_tensor(pictures[i]) for i in indices])
        labels = judge.predict(batch)  # (b, A)
        for i, row in zip(indices, labels.tolist(), strict=True):
            out[i] = {a: schema[a][v] for a, v in zip(judge.attributes, row, strict=True)}
    return out  # type: ignore[return-value]


@torch.no_grad()
def evaluate_chat(
    chat: Any,
    judge: Any | None,
    *,
    num_dialogues: int,
    seed: int,
    out_dir: str | Path,
    lang: str = "en",
    image_decoder: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    splits: Sequence[str] = ("validation", "heldout"),
    save_json: bool = True,
    progress: bool = False,
    gate: GateResult | None = None,
    pin_identity: Sequence[int] | None = None,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Score `chat` (an `llm.SVQChat`) on `num_dialogues` held-out chat-world dialogues; see
    the module docstring. judge None, or a judge that fails its gate (`svq.eval.gate`, computed
    at the chat's picture size unless `gate` is given): no judged scores (following, identity
    and the judged part of diversity are None; "judge" says why). max_new_tokens default: room
    for two pictures and text. pin_identity: see the module docstring (svq pictures only).
    generate_kwargs go to `chat.generate` (e.g. sequence_bias)."""
    if num_dialogues < 1:
        raise ValueError(f"num_dialogues must be >= 1, got {num_dialogues}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    span = chat.vocab.num_positions + 2
    max_new_tokens = max_new_tokens or 2 * span + 64
    was_training = chat.training
    chat.eval()
    dialogues = eval_dialogues(num_dialogues, seed, lang, splits)
    size = chat.svq.config.image_size

    # Every assistant turn, prompted with the true conversation before it.
    jobs = []  # (dialogue index, message index, prompt)
    shown: dict[tuple[int, int], list[str]] = {}  # pictures as the transcript shows them
    for d, dialogue in enumerate(dialogues):
        messages = []
        for m, message in enumerate(dialogue.messages):
            content = message["content"]
            if isinstance(content, str):
                messages.append({"role": message["role"], "content": content})
                continue
            parts = []
            for k, part in enumerate(content):
                if part["type"] != "image":
                    parts.append(part)
                    continue
                picture = render(part["record"], size)
                parts.append({"type": "image", "image": picture})
                if message["role"] == "user":
                    name = f"images/{dialogue.id}-m{m}-{k}.png"
                    picture.save(out_dir / name)
                    shown.setdefault((d, m), []).append(name)
            messages.append({"role": message["role"], "content": parts})
        resolved = chat.prepare(messages)
        jobs += [
            (d, m, resolved[:m]) for m, msg in enumerate(messages) if msg["role"] == "assistant"
        ]
    pins, sources = _identity_pins(chat, dialogues, jobs, pin_identity, seed, size, out_dir)
    replies = []
    batches = range(0, len(jobs), batch_size)
    for start in progress_bar(batches, desc="chat eval", disable=not progress):
        prompts = [prompt for _, _, prompt in jobs[start : start + batch_size]]
        pinned = {"pinned_ids": pins[start : start + batch_size]} if pins is not None else {}
        replies += chat.generate(
            prompts, max_new_tokens=max_new_tokens, image_decoder=image_decoder,
            **pinned, **generate_kwargs,
        )  # fmt: skip

    # Score and write.
    gate = _gate(judge, gate, size)
    scorer = judge if gate is None or gate.passed else None
    records = [
        DialogueRecord(persona={n: getattr(d.persona, n) for n in IDENTITY_ATTRIBUTES})
        for d in dialogues
    ]
    begun = complete = 0
    answers: dict[tuple[int, int], dict[str, Any]] = {}
    for (d, m, _), reply in zip(jobs, replies, strict=True):
        dialogue, record = dialogues[d], records[d]
        images = [p for p in reply["content"] if p["type"] == "image"]
        pictures = [p["image"] for p in images]
        complete += len(pictures)
        begun += len(pictures) + reply.get("incomplete_images", 0)
        names = []
        for k, picture in enumerate(pictures):
            name = f"images/{dialogue.id}-m{m}-gen{k}.png"
            picture.save(out_dir / name)
            names.append(name)
        text = " ".join(p["text"] for p in reply["content"] if p["type"] == "text")
        answers[(d, m)] = {"text": text, "images": names}
        readings = judge_pictures(scorer, pictures) if scorer is not None else []
        record.pictures += readings
        record.ids += [tuple(int(i) for i in p["ids"]) for p in images if p.get("ids") is not None]
        parsed, truth_parsed = (
            parse_reply(text, lang),
            parse_reply(_text(dialogue.messages[m]), lang),
        )
        said, true_said = (
            words_per_picture(reply["content"], lang),
            words_per_picture(dialogue.messages[m]["content"], lang),
        )
        record.replies.append(
            Reply(
                well_formed=parsed is not None,
                on_form=parsed is not None and _forms(parsed) == _forms(truth_parsed),
                stated_vs_judged=list(zip(said, readings, strict=False)),
            )
        )
        for k, pinned in enumerate(requested(dialogue.messages, m, lang)):
            if pinned:
                drawn = k < len(pictures)
                seen = readings[k] if drawn and readings else None
                stated = said[k] if k < len(said) else {}
                true_stated = true_said[k] if k < len(true_said) else {}
                record.requests.append(Request(pinned, drawn, seen, stated, true_stated))
        user = dialogue.messages[m - 1]
        user_photos = _image_parts([user]) if user["role"] == "user" else []
        topic = question_topic(_text(user), lang) if user_photos else None
        if topic is not None:
            truth = user_photos[-1]["attributes"]
            correct = bool(score_answer(topic, text, truth, lang))
            record.answers.append(Answer(topic, truth_value(topic, truth), correct))

    report = {
        "dialogues": len(dialogues),
        "judge": _judge_note(judge, gate),
        **chat_scores(records, judged=scorer is not None, seed=seed),
        "image_token_validity": complete / begun if begun else None,
        "image_decoder": image_decoder or chat.config.image_decoder,
        "identity_pins": sources,
        "transcripts": _transcripts(dialogues, shown, answers),
    }
    if save_json:
        (out_dir / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    chat.train(was_training)
    return report


def _identity_pins(
    chat: Any,
    dialogues: Sequence[EvalDialogue],
    jobs: Sequence[tuple[int, int, list[dict[str, Any]]]],
    positions: Sequence[int] | None,
    seed: int,
    size: int,
    out_dir: Path,
) -> tuple[list[torch.Tensor] | None, dict[str, Any] | None]:
    """Per job, the (N,) pins of `pin_identity` (module docstring), and where they came from;
    (None, None) without positions. Reference pictures go to out_dir/images/."""
    if positions is None:
        return None, None
    if chat.config.image_tokenizer != "svq":
        raise ValueError("pin_identity pins svq codes: the chat writes spatial VQ grids")
    positions = list(positions)
    references: dict[int, torch.Tensor] = {}
    pins, counts = [], {"dialogue": 0, "reference": 0}
    for d, _, prompt in jobs:
        ids = last_assistant_ids(prompt)
        counts["dialogue" if ids is not None else "reference"] += 1
        if ids is None:
            if d not in references:
                picture = render(persona_reference(dialogues[d], seed), size)
                picture.save(out_dir / f"images/{dialogues[d].id}-reference.png")
                references[d] = chat.image_ids(picture)
            ids = references[d]
        pins.append(pins_from(ids.cpu(), positions))
    return pins, {"positions": positions, "from": counts}


def _transcripts(
    dialogues: Sequence[EvalDialogue],
    shown: dict[tuple[int, int], list[str]],
    answers: dict[tuple[int, int], dict[str, Any]],
) -> list[dict[str, Any]]:
    out = []
    for d, dialogue in enumerate(dialogues):
        messages = []
        for m, message in enumerate(dialogue.messages):
            if message["role"] == "user":
                messages.append(
                    {"role": "user", "text": _text(message), "images": shown.get((d, m), [])}
                )
            elif message["role"] == "assistant":
                reply = answers[(d, m)]
                messages.append(
                    {"role": "assistant", "text": reply["text"], "images": reply["images"],
                     "reference_text": _text(message)}
                )  # fmt: skip
        out.append({"id": dialogue.id, "messages": messages})
    return out
