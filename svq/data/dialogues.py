"""Multi-turn chats about photos, in the transformers chat-message format, in the style of the
motivating chat (docs/design.md §1):

    user:      I went to Huangshan in autumn, it was beautiful.
    assistant: I went in winter and went skiing! [photo] I also went skiing at Changbai
               mountain before. [photo, same person]
    user:      Wow, winter at Huangshan looks lovely, there's even a sea of clouds! ...

The assistant is a persona with one fixed identity: every photo it shares shows that identity
in the place / season / activity the conversation asks for (generation targets, 1-3 per
dialogue). The user shares photos of themself (one other identity) and asks about them; the
assistant's answers come from the ground truth (understanding targets). Every image part
carries its attribute record: {"type": "image", "path": ..., "attributes": {...}}.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .captions import describe_identity, describe_scene, words
from .sampler import sample_layout, sample_scene
from .schema import SCHEMA, Identity, Scene, WorldRecord

MAX_ASSISTANT_PHOTOS = 3
MAX_USER_PHOTOS = 2
# The opening's seasons: "other" (the user names one, the assistant went in another: the
# motivating chat), "same" (the assistant went in the one the user named), "unnamed" (the user
# names none; the assistant's is free).
OPENING_SEASONS: tuple[str, ...] = ("other", "same", "unnamed")

NAMES = {
    "en": ("Lin", "Mei", "Hao", "Yu", "Jun", "Xin", "Sam", "Alex", "Ana", "Kai"),
    "zh": ("小林", "小美", "阿浩", "小雨", "阿俊", "小欣", "小山", "阿凯"),
}

# Sentences with {slots}; lists give variety. Answers name the evidence that makes them true.
PHRASES: dict[str, dict[str, Any]] = {
    "en": {
        "system": "You are {name}, a traveller who loves sharing photos. In every photo of "
        "yourself you have {identity}. When the user shares a photo, answer their questions "
        "about it from what you see.",
        "opening": ["I went to {place} in {season}, it was beautiful.",
                    "I just came back from {place}. We went in {season}!",
                    "Have you ever been to {place}? I was there in {season}."],
        "opening_unnamed": ["I went to {place}, it was beautiful.",
                            "I just came back from {place}!",
                            "Have you ever been to {place}?"],
        "opening_reply": ["I was there in {season}, {activity}!",
                          "Oh, I went in {season}! Here I am {activity}."],
        "also": "I also went {activity} at {place} before.",
        "remark": "Wow, {season} at {place} looks lovely{extra}!",
        "remark_clouds": ", there's even a sea of clouds",
        "requests": {"place_season": "What about {place} in {season}?",
                     "activity": "Do you have a photo of you {activity}?",
                     "place_time": "Do you have a photo from {place} {time}?"},
        "time": {"day": "during the day", "sunset": "at sunset", "night": "at night"},
        "here": "Yes! Here I am {scene}.",
        "share": ["Look at my photo!", "Here's one from my trip.", "Check this out!"],
        "questions": {
            "season": "What season does it look like?",
            "sea_of_clouds": "Is there a sea of clouds?",
            "place": "Can you guess where I was?",
            "activity": "What was I doing?",
            "time_of_day": "What time of day was it?",
            "shirt_colour": "What colour is my shirt?",
            "glasses": "Am I wearing glasses?",
            "hat": "Am I wearing a hat?",
            "hair": "How does my hair look?",
        },
        "answers": {
            "season": {"spring": "It's spring: the trees are in blossom.",
                       "summer": "It's summer: everything is green.",
                       "autumn": "It's autumn: the leaves have turned orange.",
                       "winter": "It's winter: there's snow everywhere."},
            "sea_of_clouds": {"yes": "Yes, a sea of clouds fills the valley below the peaks.",
                              "no": "No, there's no sea of clouds in this one."},
            "place": {"huangshan": "That's Huangshan: granite peaks and pines.",
                      "changbai": "That's Changbai mountain: a crater lake under a snowy rim.",
                      "beach": "That's the beach: sand and the sea.",
                      "city": "That's the city: tall buildings all around."},
            "activity": "You were {activity}.",
            "time_of_day": {"day": "It was daytime: the sun is up.",
                            "sunset": "It was sunset: the sky is orange.",
                            "night": "It was night: the moon and stars are out."},
            "shirt_colour": "Your shirt is {colour}.",
            "glasses": {"none": "No, you're not wearing glasses.",
                        "glasses": "Yes, you're wearing glasses.",
                        "sunglasses": "Yes, you're wearing sunglasses."},
            "hat": {"none": "No, you're not wearing a hat.", "cap": "Yes, a cap.",
                    "beanie": "Yes, a beanie."},
            "hair": "You have {hair}.",
        },
    },
    "zh": {
        "system": "你是{name}，一个喜欢分享照片的旅行者。你自己的每张照片里，你都是{identity}"
        "的样子。用户分享照片时，根据你看到的内容回答他们的问题。",
        "opening": ["我{season}去了{place}，太美了。", "我刚从{place}回来，我们是{season}去的！",
                    "你去过{place}吗？我{season}去过。"],
        "opening_unnamed": ["我去了{place}，太美了。", "我刚从{place}回来！", "你去过{place}吗？"],
        "opening_reply": ["我是{season}去的，还去{activity}了！",
                          "我{season}去过！这是我在那里{activity}。"],
        "also": "我之前还在{place}{activity}过。",
        "remark": "哇，{season}的{place}真美{extra}！",
        "remark_clouds": "，还有云海",
        "requests": {"place_season": "那{season}的{place}呢？",
                     "activity": "有你{activity}的照片吗？",
                     "place_time": "有你在{place}{time}的照片吗？"},
        "time": {"day": "白天", "sunset": "日落时", "night": "晚上"},
        "here": "有！这是我的照片：{scene}。",
        "share": ["看看我的照片！", "这是我旅行时拍的。", "你看这张！"],
        "questions": {
            "season": "看起来是什么季节？",
            "sea_of_clouds": "有云海吗？",
            "place": "猜猜我在哪里？",
            "activity": "我在做什么？",
            "time_of_day": "是什么时候拍的？",
            "shirt_colour": "我的上衣是什么颜色？",
            "glasses": "我戴眼镜了吗？",
            "hat": "我戴帽子了吗？",
            "hair": "我的头发是什么样的？",
        },
        "answers": {
            "season": {"spring": "是春天：树上开满了花。", "summer": "是夏天：到处都是绿色。",
                       "autumn": "是秋天：树叶都变橙了。", "winter": "是冬天：到处都是雪。"},
            "sea_of_clouds": {"yes": "有，山峰下面是一片云海。",
                              "no": "没有，这张照片里没有云海。"},
            "place": {"huangshan": "是黄山：花岗岩山峰和松树。",
                      "changbai": "是长白山：雪山环绕着天池。",
                      "beach": "是海边：沙滩和大海。", "city": "是城里：周围都是高楼。"},
            "activity": "你在{activity}。",
            "time_of_day": {"day": "是白天：太阳还挂着。", "sunset": "是日落时分：天空是橙色的。",
                            "night": "是晚上：月亮和星星都出来了。"},
            "shirt_colour": "你的上衣是{colour}的。",
            "glasses": {"none": "没有，你没戴眼镜。", "glasses": "戴了，你戴着眼镜。",
                        "sunglasses": "戴了，你戴着墨镜。"},
            "hat": {"none": "没有，你没戴帽子。", "cap": "戴了，是鸭舌帽。",
                    "beanie": "戴了，是毛线帽。"},
            "hair": "你的头发是{hair}。",
        },
    },
}  # fmt: skip


@dataclass
class Dialogue:
    """A chat plus the record of every image in it, in order of appearance."""

    persona_name: str
    persona: Identity  # the assistant's look in every photo it shares
    user: Identity  # the user's look in every photo they share
    lang: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    images: list[WorldRecord] = field(default_factory=list)
    shared_by: list[str] = field(default_factory=list)  # "assistant" or "user", per image

    def to_json(self, paths: list[str], dialogue_id: str = "") -> dict[str, Any]:
        """JSON-ready dialogue whose k-th image part gets path `paths[k]`."""
        if len(paths) != len(self.images):
            raise ValueError(f"Dialogue.to_json: {len(self.images)} images, {len(paths)} paths")
        messages = copy.deepcopy(self.messages)
        parts = [p for m in messages for p in m["content"] if p["type"] == "image"]
        for part, path in zip(parts, paths, strict=True):
            part["path"] = path
        return {
            "id": dialogue_id,
            "lang": self.lang,
            "persona": {"name": self.persona_name, "identity": _identity_dict(self.persona)},
            "user": {"identity": _identity_dict(self.user)},
            "messages": messages,
        }


def make_dialogue(
    rng: random.Random,
    persona: Identity,
    user: Identity,
    max_images: int = MAX_ASSISTANT_PHOTOS + MAX_USER_PHOTOS,
    lang: str = "en",
    request_kinds: Sequence[str] | None = None,
    opening_season: str = "other",
    when_first: bool = False,
    asked_first: bool = False,
) -> Dialogue:
    """A dialogue with 1-3 photos of `persona` shared by the assistant and 0-2 photos of
    `user` shared by the user, never more than `max_images` in all (>= 1).

    request_kinds: what the user's requests ask for, drawn uniformly from this list (repeat a
    kind to weigh it); default every kind once ("activity", "place_season", "place_time").
    opening_season: one of OPENING_SEASONS; "unnamed" gives the default chat but for the user's
    first words; "same" the same numbers of photos and turns, its pictures drawn from the
    opening's season on.
    when_first: the answers to requests state the season and time of day before the activity
    ("Yes! Here I am on a summer day, swimming on a beach."); the same pictures and turns.
    asked_first: the answers to requests state first what was asked, whatever `when_first`
    says: the activity for an activity request ("Yes! Here I am swimming on a beach on a
    summer day."), the season and time of day for the others; the same pictures and turns."""
    if max_images < 1:
        raise ValueError(f"make_dialogue: max_images must be >= 1, got {max_images}")
    words(lang)  # fails early on an unknown language
    kinds = sorted(PHRASES[lang]["requests"])
    if request_kinds is not None:
        unknown = sorted(set(request_kinds) - set(kinds))
        if unknown or not request_kinds:
            raise ValueError(f"make_dialogue: request_kinds must be some of {kinds}, "
                             f"got {list(request_kinds)}")  # fmt: skip
        kinds = list(request_kinds)
    if opening_season not in OPENING_SEASONS:
        raise ValueError(f"make_dialogue: opening_season must be one of {OPENING_SEASONS}, "
                         f"got {opening_season!r}")  # fmt: skip
    n_assistant = rng.randint(1, min(MAX_ASSISTANT_PHOTOS, max_images))
    n_user = rng.randint(0, min(MAX_USER_PHOTOS, max_images - n_assistant))
    chat = _Chat(rng, lang, persona, user, rng.choice(NAMES[lang]), kinds, when_first,
                 asked_first)  # fmt: skip
    first_pair = n_assistant >= 2 and rng.random() < 0.6  # the motivating chat shares two
    chat.opening(2 if first_pair else 1, opening_season)
    rest = ["request"] * (n_assistant - (2 if first_pair else 1)) + ["user_photo"] * n_user
    rng.shuffle(rest)
    for kind in rest:
        chat.request() if kind == "request" else chat.user_photo()
    return chat.dialogue


class _Chat:
    """Builds one dialogue exchange by exchange; each adds one user and one assistant turn."""

    def __init__(
        self,
        rng: random.Random,
        lang: str,
        persona: Identity,
        user: Identity,
        name: str,
        request_kinds: Sequence[str],
        when_first: bool = False,
        asked_first: bool = False,
    ):
        self.rng, self.lang, self.request_kinds = rng, lang, request_kinds
        self.when_first, self.asked_first = when_first, asked_first
        self.t = PHRASES[lang]
        self.w = words(lang)
        self.dialogue = Dialogue(name, persona, user, lang)
        system = self.t["system"].format(name=name, identity=describe_identity(persona, lang))
        self._say("system", system)

    # --- message plumbing
    def _say(self, role: str, *parts: str | WorldRecord) -> None:
        content = []
        for part in parts:
            if isinstance(part, WorldRecord):
                content.append({"type": "image", "attributes": part.attributes()})
                self.dialogue.images.append(part)
                self.dialogue.shared_by.append(role)
            else:
                content.append({"type": "text", "text": part})
        self.dialogue.messages.append({"role": role, "content": content})

    def _photo(self, identity: Identity, **pins: str) -> WorldRecord:
        return WorldRecord(identity, sample_scene(self.rng, **pins), sample_layout(self.rng))

    def _last_assistant_photo(self) -> WorldRecord | None:
        mine = [
            r
            for r, by in zip(self.dialogue.images, self.dialogue.shared_by, strict=True)
            if by == "assistant"
        ]
        return mine[-1] if mine else None

    # --- exchanges
    def opening(self, photos: int, seasons: str = "other") -> None:
        """The user names a trip; the assistant shares its own photo of that place, by default
        in another season (`seasons`: see OPENING_SEASONS), and, with `photos` == 2, the same
        activity somewhere else."""
        rng, w, t = self.rng, self.w, self.t
        place = rng.choice(SCHEMA["place"])
        season = rng.choice(SCHEMA["season"])
        mine = rng.choice([s for s in SCHEMA["season"] if s != season])  # drawn for every
        mine = season if seasons == "same" else mine  # choice: the same random stream
        templates = t["opening_unnamed"] if seasons == "unnamed" else t["opening"]
        user_text = rng.choice(templates).format(
            place=w["place_name"][place], season=w["season"][season]
        )
        first = self._photo(self.dialogue.persona, place=place, season=mine)
        reply = rng.choice(t["opening_reply"]).format(
            season=w["season"][mine], activity=w["activity"][first.scene.activity]
        )
        parts: list[str | WorldRecord] = [reply, first]
        if photos == 2:
            second = self._elsewhere(first.scene)
            parts += [
                t["also"].format(
                    activity=w["activity"][second.scene.activity],
                    place=w["place_name"][second.scene.place],
                ),
                second,
            ]
        self._say("user", user_text)
        self._say("assistant", *parts)

    def _elsewhere(self, scene: Scene) -> WorldRecord:
        """The same activity (and season, if possible) at another place."""
        for pins in (
            {"activity": scene.activity, "season": scene.season},
            {"activity": scene.activity},
        ):
            places = [p for p in SCHEMA["place"] if p != scene.place]
            self.rng.shuffle(places)
            for place in places:
                try:
                    return self._photo(self.dialogue.persona, place=place, **pins)
                except ValueError:  # e.g. no skiing at the beach
                    continue
        return self._photo(self.dialogue.persona)

    def request(self) -> None:
        """The user remarks on the assistant's last photo (from its ground truth) and asks for
        another; the assistant shares one that matches the request."""
        rng, w, t = self.rng, self.w, self.t
        remark = ""
        last = self._last_assistant_photo()
        if last is not None:
            extra = t["remark_clouds"] if last.scene.sea_of_clouds == "yes" else ""
            remark = t["remark"].format(
                season=w["season"][last.scene.season],
                place=w["place_name"][last.scene.place],
                extra=extra,
            )
        kind = rng.choice(self.request_kinds)
        place = rng.choice(SCHEMA["place"])
        if kind == "place_season":
            pins = {"place": place, "season": rng.choice(SCHEMA["season"])}
        elif kind == "activity":
            pins = {"activity": rng.choice(SCHEMA["activity"])}
        else:
            pins = {"place": place, "time_of_day": rng.choice(SCHEMA["time_of_day"])}
        photo = self._photo(self.dialogue.persona, **pins)
        ask = t["requests"][kind].format(
            place=w["place_name"].get(pins.get("place", ""), ""),
            season=w["season"].get(pins.get("season", ""), ""),
            activity=w["activity"].get(pins.get("activity", ""), ""),
            time=t["time"].get(pins.get("time_of_day", ""), ""),
        )
        self._say(
            "user", " ".join(s for s in (remark, ask) if s) if self.lang == "en" else remark + ask
        )
        when_first = kind != "activity" if self.asked_first else self.when_first
        scene = describe_scene(photo.scene, self.lang, when_first)
        self._say("assistant", t["here"].format(scene=scene), photo)

    def user_photo(self) -> None:
        """The user shares a photo of themself and asks about it; the answer is the truth."""
        rng, t = self.rng, self.t
        photo = self._photo(self.dialogue.user)
        topics = sorted(t["questions"])
        topic = rng.choice(topics)
        if photo.scene.place == "huangshan" and rng.random() < 0.5:
            topic = "sea_of_clouds"  # the question the motivating chat answers
        self._say("user", rng.choice(t["share"]), photo, t["questions"][topic])
        self._say("assistant", self._answer(topic, photo))

    def _answer(self, topic: str, photo: WorldRecord) -> str:
        return photo_answer(topic, photo, self.lang)


def photo_answer(topic: str, photo: WorldRecord, lang: str = "en") -> str:
    """The true answer to the world's photo question on `topic` (a key of PHRASES[lang]
    ["questions"]) about `photo`, in `lang`."""
    w, answers = words(lang), PHRASES[lang]["answers"]
    if topic == "activity":
        return answers["activity"].format(activity=w["activity"][photo.scene.activity])
    if topic == "shirt_colour":
        return answers["shirt_colour"].format(colour=w["shirt_colour"][photo.identity.shirt_colour])
    if topic == "hair":
        style = w["hair_style"][photo.identity.hair_style]
        return answers["hair"].format(
            hair=style.format(c=w["hair_colour"][photo.identity.hair_colour])
        )
    return answers[topic][photo.attributes()[topic]]


def _identity_dict(identity: Identity) -> dict[str, str]:
    return dataclasses.asdict(identity)
