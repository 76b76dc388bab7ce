"""The grammar of the assistant's replies in the chat world: every sentence the assistant says,
with what it means, so a generated reply can be read back (well formed? what does it say?).

    from svq.data.grammar import parse_reply
    parse_reply("Yes! Here I am skiing on a beach at sunset in winter.")
    # [Sentence(form="here", values={"activity": "skiing", "place": "beach", ...})]
    parse_reply("Yes! Here I am is or shirt.")  # None: not a sentence of the world

The sentences are enumerated from the phrase tables (`dialogues.PHRASES`, `captions.WORDS`),
so they change with them: every value of every slot, in English and Chinese (~700 each). A
reply parses when its text is a sequence of these sentences (whitespace between them allowed);
scenes are enumerated over every combination of values, sensible or not (grammar, not truth).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import cache

from .captions import describe_scene, words
from .dialogues import PHRASES
from .schema import SCHEMA, Scene

# The forms of assistant sentences: the opening reply (season and activity of its photo), the
# second opening photo ("also": activity and place), the answer to a request ("here": the whole
# scene, the activity or the season and time of day first) and the answers to questions about
# the user's photo ("answer:<topic>").
SCENE_FORMS = ("opening_reply", "also", "here")


@dataclass(frozen=True)
class Sentence:
    """One sentence of an assistant reply and what it says."""

    form: str  # "opening_reply", "also", "here" or "answer:<topic>"
    values: dict[str, str] = field(default_factory=dict)  # attribute -> value it states
    text: str = ""


def _scenes() -> list[Scene]:
    names = ("place", "season", "activity", "time_of_day", "sea_of_clouds")
    combinations = itertools.product(*(SCHEMA[n] for n in names))
    return [Scene(**dict(zip(names, values, strict=True))) for values in combinations]


@cache
def sentences(lang: str = "en") -> dict[str, Sentence]:
    """Every sentence the assistant can say in `lang`, keyed by its text."""
    t, w = PHRASES[lang], words(lang)
    out: dict[str, Sentence] = {}

    def add(form: str, text: str, **values: str) -> None:
        out.setdefault(text, Sentence(form, values, text))

    for template in t["opening_reply"]:
        for season, activity in itertools.product(SCHEMA["season"], SCHEMA["activity"]):
            text = template.format(season=w["season"][season], activity=w["activity"][activity])
            add("opening_reply", text, season=season, activity=activity)
    for activity, place in itertools.product(SCHEMA["activity"], SCHEMA["place"]):
        text = t["also"].format(activity=w["activity"][activity], place=w["place_name"][place])
        add("also", text, activity=activity, place=place)
    for scene, when_first in itertools.product(_scenes(), (False, True)):
        text = t["here"].format(scene=describe_scene(scene, lang, when_first))
        add("here", text, **{k: v for k, v in vars(scene).items() if k != "sea_of_clouds"})
    answers = t["answers"]
    for topic, table in answers.items():
        form = f"answer:{topic}"
        if topic == "activity":
            for v in SCHEMA["activity"]:
                add(form, table.format(activity=w["activity"][v]), activity=v)
        elif topic == "shirt_colour":
            for v in SCHEMA["shirt_colour"]:
                add(form, table.format(colour=w["shirt_colour"][v]), shirt_colour=v)
        elif topic == "hair":
            for style, colour in itertools.product(SCHEMA["hair_style"], SCHEMA["hair_colour"]):
                hair = w["hair_style"][style].format(c=w["hair_colour"][colour])
                add(form, table.format(hair=hair), hair_style=style, hair_colour=colour)
        else:
            for value, text in table.items():
                add(form, text, **{topic: value})
    return out


@cache
def _pattern(lang: str) -> re.Pattern[str]:
    # longest first: Python's alternation takes the first alternative that matches
    texts = sorted(sentences(lang), key=len, reverse=True)
    return re.compile("|".join(re.escape(s) for s in texts))


def parse_reply(text: str, lang: str = "en") -> list[Sentence] | None:
    """The sentences of a reply's text, in order; None when any part of it is not a sentence
    of the world's grammar (an empty text parses to [])."""
    pattern, table = _pattern(lang), sentences(lang)
    out, position, text = [], 0, text.strip()
    while position < len(text):
        match = pattern.match(text, position)
        if match is None:
            return None
        out.append(table[match.group(0)])
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return out


def stated_values(parsed: list[Sentence] | None) -> dict[str, str]:
    """The attribute values a reply's sentences state (later sentences win); {} for None."""
    out: dict[str, str] = {}
    for sentence in parsed or []:
        out.update(sentence.values)
    return out
