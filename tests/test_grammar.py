"""svq/data/grammar.py and the reply figures of svq/eval/chat_scores.py: every assistant sentence
the world writes reads back with the values it was made from; garbled or partial text does
not parse; text following and pictures-vs-words score right and wrong replies as such, and a
constant reply scores no more than the constant baseline."""

import random

import pytest

from svq.data import make_dialogue, sample_identity
from svq.data.grammar import parse_reply, sentences, stated_values
from svq.eval.chat_eval import words_per_picture
from svq.eval.chat_scores import DialogueRecord, Reply, Request, reply_scores


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("when_first", [False, True])
def test_every_reply_of_the_world_parses_to_what_it_says(lang, when_first):
    rng = random.Random(1)
    here = 0
    for _ in range(60):
        dialogue = make_dialogue(
            rng, sample_identity(rng), sample_identity(rng), lang=lang, when_first=when_first
        )
        for message in dialogue.messages:
            if message["role"] != "assistant":
                continue
            joiner = " " if lang == "en" else ""
            text = joiner.join(p["text"] for p in message["content"] if p["type"] == "text")
            parsed = parse_reply(text, lang)
            assert parsed is not None, text
            said = words_per_picture(message["content"], lang)
            for part, values in zip(
                [p for p in message["content"] if p["type"] == "image"], said, strict=True
            ):
                truth = part["attributes"]
                assert all(truth[k] == v for k, v in values.items()), (text, values)
                here += len(values) == 4  # a "here" sentence states the whole scene
    assert here > 10


def test_garbled_partial_and_empty_replies():
    good = "Yes! Here I am skiing on a beach at sunset in winter."
    assert [s.form for s in parse_reply(good)] == ["here"]
    assert stated_values(parse_reply(good)) == {
        "activity": "skiing", "place": "beach", "time_of_day": "sunset", "season": "winter"
    }  # fmt: skip
    assert parse_reply("It was sunset: the sky is is or shirt in this green") is None
    assert parse_reply("Yes! Here I am skiing on a beach") is None  # cut short
    assert parse_reply(good + " And") is None
    assert parse_reply("  ") == [] and stated_values(None) == {}
    first = "Yes! Here I am at sunset in winter, skiing on a beach."  # the season first
    assert stated_values(parse_reply(first)) == stated_values(parse_reply(good))
    assert parse_reply("Yes! Here I am at sunset in winter skiing on a beach.") is None
    # English answers a request in two orders, Chinese in one (its season always comes first)
    assert len(sentences("en")) - len(sentences("zh")) == len(
        [s for s in sentences("zh").values() if s.form == "here"]
    )
    assert len(sentences("zh")) > 500


PINS = [{"place": "beach", "season": "winter"}, {"place": "city", "season": "summer"}]
SCENE = ("place", "season", "activity", "time_of_day")


def _records(stated: list[dict], judged: list[dict]) -> list[DialogueRecord]:
    out = []
    for pins, words, seen in zip(PINS * 10, stated * 10, judged * 10, strict=True):
        true_said = dict.fromkeys(SCENE, "x")
        out.append(DialogueRecord(
            persona={},
            requests=[Request(pins, True, seen, words, true_said)],
            replies=[Reply(True, True, [(words, seen)])],
        ))  # fmt: skip
    return out


def test_text_following_and_pictures_against_their_words():
    right = _records(PINS, PINS)
    scores = reply_scores(right, judged=True)
    assert scores["text_following"]["mean"] == 1.0
    assert scores["picture_vs_text"]["value"] == 1.0
    assert scores["well_formed"]["value"] == 1.0
    # the words follow the request, the pictures draw something else
    scores = reply_scores(_records(PINS, [PINS[1], PINS[0]]), judged=True)
    assert scores["text_following"]["mean"] == 1.0 and scores["picture_vs_text"]["value"] == 0
    # one constant reply: text following at the constant baseline, not above
    constant = reply_scores(_records([PINS[0], PINS[0]], PINS), judged=True)["text_following"]
    assert constant["mean"] == pytest.approx(constant["best_constant"]) == 0.5
    # unread words count as wrong; no judge: no picture figure
    unread = reply_scores(_records([None, None], PINS), judged=False)
    assert unread["text_following"]["mean"] == 0 and unread["picture_vs_text"] is None
