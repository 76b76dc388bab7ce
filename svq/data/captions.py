"""Captions and short descriptions from attribute records, in English ("en") and Chinese ("zh").

The phrase tables are data; every value of every attribute has a phrase in both languages
(a test checks), so a new value cannot be added without its words.
"""

from __future__ import annotations

from .schema import Identity, Scene, WorldRecord

LANGUAGES = ("en", "zh")

WORDS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "hair_colour": {"black": "black", "brown": "brown", "blonde": "blonde", "red": "red",
                        "white": "white", "blue": "blue"},
        "hair_style": {"short": "short {c} hair", "long": "long {c} hair",
                       "ponytail": "{c} hair in a ponytail", "curly": "curly {c} hair"},
        "skin_tone": {"light": "light", "medium": "medium", "tan": "tan", "dark": "dark"},
        "shirt_colour": {"red": "red", "yellow": "yellow", "green": "green", "blue": "blue",
                         "purple": "purple", "white": "white"},
        "hat": {"none": "", "cap": "a cap", "beanie": "a beanie"},
        "glasses": {"none": "", "glasses": "glasses", "sunglasses": "sunglasses"},
        "place": {"huangshan": "on Huangshan's granite peaks",
                  "changbai": "by the crater lake of Changbai mountain",
                  "beach": "on a beach", "city": "in a city"},
        "place_name": {"huangshan": "Huangshan", "changbai": "Changbai mountain",
                       "beach": "the beach", "city": "the city"},
        "season": {"spring": "spring", "summer": "summer", "autumn": "autumn",
                   "winter": "winter"},
        "activity": {"hiking": "hiking", "skiing": "skiing", "swimming": "swimming",
                     "taking_photos": "taking photos", "flying_kite": "flying a kite"},
        "season_a": {"spring": "a spring", "summer": "a summer", "autumn": "an autumn",
                     "winter": "a winter"},
        "time_of_day": {"day": "on {sa} day", "sunset": "at sunset in {s}",
                        "night": "on {sa} night"},
        "sea_of_clouds": {"no": "", "yes": " above a sea of clouds"},
    },
    "zh": {
        "hair_colour": {"black": "黑色", "brown": "棕色", "blonde": "金色", "red": "红色",
                        "white": "白色", "blue": "蓝色"},
        "hair_style": {"short": "{c}短发", "long": "{c}长发", "ponytail": "{c}马尾辫",
                       "curly": "{c}卷发"},
        "skin_tone": {"light": "浅肤色", "medium": "中等肤色", "tan": "小麦肤色",
                      "dark": "深肤色"},
        "shirt_colour": {"red": "红色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
                         "purple": "紫色", "white": "白色"},
        "hat": {"none": "", "cap": "戴鸭舌帽", "beanie": "戴毛线帽"},
        "glasses": {"none": "", "glasses": "戴眼镜", "sunglasses": "戴墨镜"},
        "place": {"huangshan": "在黄山的花岗岩山峰上", "changbai": "在长白山天池边",
                  "beach": "在海滩上", "city": "在城市里"},
        "place_name": {"huangshan": "黄山", "changbai": "长白山", "beach": "海边",
                       "city": "城里"},
        "season": {"spring": "春天", "summer": "夏天", "autumn": "秋天", "winter": "冬天"},
        "season_a": {"spring": "春天", "summer": "夏天", "autumn": "秋天", "winter": "冬天"},
        "activity": {"hiking": "徒步", "skiing": "滑雪", "swimming": "游泳",
                     "taking_photos": "拍照", "flying_kite": "放风筝"},
        "time_of_day": {"day": "{s}的白天", "sunset": "{s}的日落时分", "night": "{s}的夜晚"},
        "sea_of_clouds": {"no": "", "yes": "，脚下是一片云海"},
    },
}  # fmt: skip


def words(lang: str) -> dict[str, dict[str, str]]:
    """The phrase table of one language: words(lang)[attribute][value]."""
    if lang not in WORDS:
        raise ValueError(f"unknown language {lang!r}, expected one of {LANGUAGES}")
    return WORDS[lang]


def describe_identity(identity: Identity, lang: str = "en") -> str:
    """How the person looks, e.g. 'long red hair, light skin, a blue shirt, a cap and glasses'."""
    w = words(lang)
    hair = w["hair_style"][identity.hair_style].format(c=w["hair_colour"][identity.hair_colour])
    extras = [e for e in (w["hat"][identity.hat], w["glasses"][identity.glasses]) if e]
    if lang == "zh":
        shirt = f"穿{w['shirt_colour'][identity.shirt_colour]}上衣"
        return "、".join([hair, w["skin_tone"][identity.skin_tone], shirt, *extras])
    skin = f"{w['skin_tone'][identity.skin_tone]} skin"
    parts = [hair, skin, f"a {w['shirt_colour'][identity.shirt_colour]} shirt", *extras]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_scene(scene: Scene, lang: str = "en", when_first: bool = False) -> str:
    """What, where and when, e.g. 'skiing on Huangshan's granite peaks above a sea of clouds
    on a winter day'; `when_first`: the season and time of day first, 'on a winter day,
    skiing on Huangshan's granite peaks above a sea of clouds' (Chinese always puts them
    first)."""
    w = words(lang)
    when = w["time_of_day"][scene.time_of_day].format(
        s=w["season"][scene.season], sa=w["season_a"][scene.season]
    )
    clouds = w["sea_of_clouds"][scene.sea_of_clouds]
    if lang == "zh":
        return f"{when}{w['place'][scene.place]}{w['activity'][scene.activity]}{clouds}"
    what = f"{w['activity'][scene.activity]} {w['place'][scene.place]}{clouds}"
    return f"{when}, {what}" if when_first else f"{what} {when}"


def caption(record: WorldRecord, lang: str = "en", when_first: bool = False) -> str:
    """One sentence naming every judged attribute of the picture (`when_first`: its scene with
    the season and time of day first, see `describe_scene`)."""
    person = describe_identity(record.identity, lang)
    scene = describe_scene(record.scene, lang, when_first)
    if lang == "zh":
        return f"一个{person}的人，{scene}。"
    return f"A person with {person}, {scene}."


def captions(record: WorldRecord) -> dict[str, str]:
    """The caption in every language: {"en": ..., "zh": ...}."""
    return {lang: caption(record, lang) for lang in LANGUAGES}
