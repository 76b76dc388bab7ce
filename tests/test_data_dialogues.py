"""Captions, dialogues and the on-disk chat world (`svq world`)."""

import json
import random

import numpy as np
import pytest
from PIL import Image

from svq.cli import main
from svq.data import (
    SCHEMA,
    WorldRecord,
    caption,
    load_dialogues,
    make_dialogue,
    render,
    sample_identity,
    world_record,
    write_world,
)
from svq.data.captions import LANGUAGES, WORDS
from svq.data.dialogues import PHRASES

# A Qwen-style template that reads content lists, writes <image> for image parts and refuses
# conversations whose roles do not alternate user / assistant after an optional system turn.
TEMPLATE = (
    "{% for message in messages %}"
    "{% set i = loop.index0 - (1 if messages[0]['role'] == 'system' else 0) %}"
    "{% if message['role'] != 'system' and (message['role'] == 'user') != (i % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
)


def dialogues(n: int, lang: str = "en"):
    rng = random.Random(0)
    return [
        make_dialogue(rng, sample_identity(rng), sample_identity(rng), lang=lang) for _ in range(n)
    ]


def test_every_value_has_words_in_every_language():
    for lang in LANGUAGES:
        for name, values in SCHEMA.items():
            assert set(WORDS[lang][name]) == set(values), (lang, name)
    record = world_record(0, "train", 1)
    text = caption(record)
    assert text.startswith("A person with") and record.scene.season in text
    assert "\u4eba" in caption(record, "zh")  # 人
    with pytest.raises(ValueError, match="language"):
        caption(record, "fr")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_dialogues_keep_one_identity_per_persona_and_answer_from_truth(lang):
    answers = PHRASES[lang]["answers"]
    counts = {"assistant": set(), "user": set()}
    answered = 0
    for chat in dialogues(60, lang):
        roles = [m["role"] for m in chat.messages]
        assert roles[0] == "system" and roles[1::2] == ["user"] * (len(roles) // 2)
        assert roles[2::2] == ["assistant"] * ((len(roles) - 1) // 2) and roles[-1] == "assistant"
        mine = [r for r, by in zip(chat.images, chat.shared_by, strict=True) if by == "assistant"]
        theirs = [r for r, by in zip(chat.images, chat.shared_by, strict=True) if by == "user"]
        assert 1 <= len(mine) <= 3 and len(theirs) <= 2
        assert all(r.identity == chat.persona for r in mine)
        assert all(r.identity == chat.user for r in theirs)
        counts["assistant"].add(len(mine))
        counts["user"].add(len(theirs))
        parts = [p for m in chat.messages for p in m["content"] if p["type"] == "image"]
        assert [p["attributes"] for p in parts] == [r.attributes() for r in chat.images]
        # Each user photo is followed by a question whose answer states the truth.
        for k, message in enumerate(chat.messages):
            photos = [p for p in message["content"] if p["type"] == "image"]
            if message["role"] != "user" or not photos:
                continue
            record = WorldRecord.from_dict(photos[0])
            reply = chat.messages[k + 1]["content"][0]["text"]
            for topic in ("season", "time_of_day", "sea_of_clouds", "place", "glasses", "hat"):
                if message["content"][-1]["text"] == PHRASES[lang]["questions"][topic]:
                    assert reply == answers[topic][record.attributes()[topic]]
                    answered += 1
    assert answered >= 10
    assert counts == {"assistant": {1, 2, 3}, "user": {0, 1, 2}}


def test_dialogues_apply_through_a_chat_template():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        unk_token="[UNK]",
    )
    tokenizer.chat_template = TEMPLATE
    for chat in dialogues(10):
        data = chat.to_json([f"{k}.png" for k in range(len(chat.images))], "d")
        text = tokenizer.apply_chat_template(data["messages"], tokenize=False)
        assert text.count("<image>") == len(chat.images)
        assert text.count("<|im_start|>assistant") == sum(
            m["role"] == "assistant" for m in chat.messages
        )
        assert chat.persona_name in text
        json.dumps(data)  # JSON-ready
    broken = [data["messages"][0], data["messages"][1], data["messages"][1]]
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template(broken, tokenize=False)


def test_write_world_loads_with_datasets_and_matches_its_records(tmp_path):
    import datasets

    summary = write_world(tmp_path / "w", n=24, size=32, seed=3, n_eval=6)
    out = summary.out
    assert summary.images == {"train": 24, "validation": 6, "test": 6, "heldout": 6}
    cache = str(tmp_path / "cache")
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=cache)
    assert set(loaded) == {"train", "validation", "test"} and len(loaded["train"]) == 24
    row = loaded["train"][0]
    assert row["image"].size == (32, 32) and set(row["attributes"]) == set(SCHEMA)
    everything = datasets.load_dataset(str(out), cache_dir=cache)
    assert set(everything) == {"train", "validation", "test", "heldout"}
    # Every row re-renders to its file; every dialogue image part points at a real row.
    for split in ("train", "heldout"):
        rows = [
            json.loads(line) for line in (out / split / "metadata.jsonl").read_text().splitlines()
        ]
        by_file = {r["file_name"]: r for r in rows}
        for r in rows[:5]:
            expected = np.asarray(render(WorldRecord.from_dict(r), 32))
            assert np.array_equal(np.asarray(Image.open(out / split / r["file_name"])), expected)
        images = 0
        for chat in load_dialogues(out / split):
            for message in chat["messages"]:
                for part in message["content"]:
                    if part["type"] == "image":
                        images += 1
                        row = by_file[part["path"].rsplit("/", 1)[-1]]
                        assert row["attributes"] == part["attributes"]
                        assert row["dialogue"] == chat["id"] and row["shared_by"] == message["role"]
        assert images == len(rows)
    held = {r["identity"] for r in map(json.loads, (out / "heldout/metadata.jsonl").open())}
    train = {r["identity"] for r in map(json.loads, (out / "train/metadata.jsonl").open())}
    assert held and not held & train
    info = json.loads((out / "world.json").read_text())
    assert info["schema"]["season"] == list(SCHEMA["season"]) and info["size"] == 32


def test_write_world_is_reproducible_and_refuses_to_overwrite(tmp_path):
    write_world(tmp_path / "a", n=8, size=16, seed=1, n_eval=2)
    write_world(tmp_path / "b", n=8, size=16, seed=1, n_eval=2, workers=2)
    for name in ("train/metadata.jsonl", "train/dialogues.jsonl", "test/000001.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ValueError, match="overwrite"):
        write_world(tmp_path / "a", n=8, size=16)
    write_world(tmp_path / "a", n=4, size=16, n_eval=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "README.md",
        "train",
        "world.json",
    ]
    assert len(list((tmp_path / "a/train").glob("*.png"))) == 4


def test_svq_world_command(tmp_path, capsys):
    assert (
        main(["world", "--out", str(tmp_path / "w"), "--n", "6", "--size", "16", "--seed", "2"])
        == 0
    )
    assert "wrote 6 pictures" in capsys.readouterr().out  # n_eval = 6 // 10 = 0
    assert len(list((tmp_path / "w/train").glob("*.png"))) == 6
    assert main(["world", "--out", str(tmp_path / "w"), "--n", "0"]) == 2
    assert "n >= 1" in capsys.readouterr().err


def test_request_kinds_weigh_what_the_user_asks_for():
    """The default draws every kind once (the same dialogue as naming them all); a list of one
    kind makes every request that kind; an unknown kind is refused."""
    kinds = sorted(PHRASES["en"]["requests"])

    def chat(seed, **kw):
        rng = random.Random(seed)
        return make_dialogue(rng, sample_identity(rng), sample_identity(rng), **kw)

    for seed in range(20):
        assert chat(seed).messages == chat(seed, request_kinds=kinds).messages
    seasons = ("spring", "summer", "autumn", "winter")
    asks = [
        m["content"][-1]["text"]
        for seed in range(40)
        for m in chat(seed, request_kinds=["place_season"]).messages
        if m["role"] == "user" and "What about" in m["content"][-1].get("text", "")
    ]
    assert len(asks) > 10 and all(any(s in a.split("What about")[1] for s in seasons) for a in asks)
    with pytest.raises(ValueError, match="request_kinds must be some of"):
        chat(0, request_kinds=["weather"])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_opening_season_changes_only_the_openings_season(lang):
    """The default ("other") is today's chat; "same" pins the opening photo to the season the user
    named (as many photos); "unnamed" drops the user's season word and changes nothing else; an
    unknown choice is refused."""
    season_words = WORDS[lang]["season"]

    def chat(seed, **kw):
        rng = random.Random(seed)
        return make_dialogue(rng, sample_identity(rng), sample_identity(rng), lang=lang, **kw)

    for seed in range(20):
        other, same = chat(seed), chat(seed, opening_season="same")
        unnamed = chat(seed, opening_season="unnamed")
        assert other.messages == chat(seed, opening_season="other").messages
        opening = other.messages[1]["content"][0]["text"]
        named = [s for s, word in season_words.items() if word in opening]
        assert len(named) == 1  # the user names one season ...
        assert other.images[0].scene.season != named[0]  # ... the assistant went in another
        assert same.images[0].scene.season == named[0]
        said = unnamed.messages[1]["content"][0]["text"]
        assert not any(word in said for word in season_words.values())
        # the same pictures and the same later turns as the default chat
        assert unnamed.images == other.images and unnamed.messages[2:] == other.messages[2:]
        assert len(same.images) == len(other.images)
    with pytest.raises(ValueError, match="opening_season must be one of"):
        chat(0, opening_season="spring")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_when_first_moves_the_season_before_the_activity(lang):
    """`when_first` changes the words of the answers to requests only: the same pictures and
    turns; in English the season and time of day come before the activity, in Chinese (where
    they always come first) nothing changes."""

    def chat(seed, **kw):
        rng = random.Random(seed)
        return make_dialogue(rng, sample_identity(rng), sample_identity(rng), lang=lang, **kw)

    changed = 0
    for seed in range(30):
        plain, first = chat(seed), chat(seed, when_first=True)
        assert first.images == plain.images and len(first.messages) == len(plain.messages)
        for a, b in zip(plain.messages, first.messages, strict=True):
            if a == b:
                continue
            assert lang == "en" and a["role"] == "assistant"
            text_a, text_b = a["content"][0]["text"], b["content"][0]["text"]
            scene = a["content"][1]["attributes"]
            activity = WORDS[lang]["activity"][scene["activity"]]
            season = WORDS[lang]["season"][scene["season"]]
            assert text_a.index(activity) < text_a.index(season)
            assert text_b.index(season) < text_b.index(activity)
            assert sorted(text_a.replace(",", "")) == sorted(text_b.replace(",", ""))
            changed += 1
    assert changed > 10 if lang == "en" else changed == 0


def test_asked_first_answers_with_what_was_asked():
    """`asked_first`: an activity request is answered activity first, a place-and-season or
    place-and-time request season first, with `when_first` or without; the same pictures."""

    def chat(seed, **kw):
        rng = random.Random(seed)
        return make_dialogue(rng, sample_identity(rng), sample_identity(rng), **kw)

    activity_request = PHRASES["en"]["requests"]["activity"].split("{")[0]  # "Do you have..."
    answer = PHRASES["en"]["here"].split("{")[0]  # "Yes! Here I am "
    asked = {"activity": 0, "other": 0}
    for seed in range(40):
        plain, when = chat(seed), chat(seed, when_first=True)
        for when_first in (False, True):
            first = chat(seed, asked_first=True, when_first=when_first)
            assert first.images == plain.images and len(first.messages) == len(plain.messages)
            for k, message in enumerate(first.messages):
                if message["role"] != "assistant":
                    continue
                if not message["content"][0]["text"].startswith(answer):
                    continue  # the opening, or an answer about the user's photo
                user = first.messages[k - 1]["content"][0]["text"]
                kind = "activity" if activity_request in user else "other"
                expected = plain if kind == "activity" else when
                assert message == expected.messages[k], (user, message)
                asked[kind] += 1
    assert asked["activity"] > 10 and asked["other"] > 10
