"""eval/chat.py: the scoring rules on hand-made cases (a right answer scores 1, a wrong or
ambiguous one 0; requests read from the talk; identity agreement), and `evaluate_chat` on a
tiny model with a tiny judge: the schema, transcripts and picture files."""

import json

import pytest
import torch
from test_llm_tiny import build_chat

from eval.chat import (
    answer_phrases,
    answer_value,
    eval_dialogues,
    evaluate_chat,
    following_scores,
    identity_scores,
    question_topic,
    requested,
    score_answer,
)
from eval.judge import AttributeJudge, JudgeConfig
from svq.data import SCHEMA
from svq.data.dialogues import PHRASES


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_true_answer_of_the_world_scores_one_and_others_zero(lang):
    answers = PHRASES[lang]["answers"]
    for topic in PHRASES[lang]["questions"]:
        phrases = answer_phrases(topic, lang)
        for value, (sentence, _) in phrases.items():
            assert answer_value(topic, sentence, lang) == value, (topic, sentence)
        if topic in ("season", "place", "time_of_day", "glasses", "hat", "sea_of_clouds"):
            assert set(phrases) == set(SCHEMA[topic]) and set(answers[topic]) == set(phrases)
    attributes = {"season": "winter", "hair_style": "curly", "hair_colour": "red",
                  "glasses": "sunglasses", "activity": "taking_photos"}  # fmt: skip
    if lang == "en":
        assert score_answer("season", "It's winter: there's snow everywhere.", attributes) == 1
        assert score_answer("season", "Looks like winter to me!", attributes) == 1  # keyword
        assert score_answer("season", "It's summer: everything is green.", attributes) == 0
        assert score_answer("season", "winter or summer?", attributes) == 0  # ambiguous
        assert score_answer("season", "I like snow.", attributes) == 0  # says no season
        assert score_answer("hair", "You have curly red hair.", attributes) == 1
        assert score_answer("hair", "You have curly brown hair.", attributes) == 0
        assert score_answer("glasses", "Yes, you're wearing sunglasses.", attributes) == 1
        assert score_answer("glasses", "Yes, you're wearing glasses.", attributes) == 0
        assert answer_value("glasses", "No, you're not wearing glasses.") == "none"
        assert answer_value("sea_of_clouds", "No, there's no sea of clouds in this one.") == "no"
        assert answer_value("sea_of_clouds", "Yes, a sea of clouds fills the valley.") == "yes"
        assert score_answer("activity", "You were taking photos.", attributes) == 1
    else:
        assert score_answer("season", "是冬天：到处都是雪。", attributes, "zh") == 1
        assert score_answer("season", "是夏天。", attributes, "zh") == 0
        assert answer_value("sea_of_clouds", "没有，这张照片里没有云海。", "zh") == "no"


def test_requests_and_questions_are_read_from_the_talk():
    seen = {"place_season": 0, "activity": 0, "place_time": 0, "opening": 0}
    for dialogue in eval_dialogues(30, seed=0):
        messages = dialogue.messages
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            photos = [p for p in message["content"] if p["type"] == "image"]
            requests = requested(messages, i)
            assert len(requests) == len(photos)
            if not photos:
                user = messages[i - 1]["content"]
                text = " ".join(p["text"] for p in user if p["type"] == "text")
                assert question_topic(text) is not None  # an answer turn follows a question
                continue
            first = requests[0]
            for name, value in first.items():  # pins are the photo's truth
                assert photos[0]["attributes"][name] == value
            key = tuple(sorted(first))
            kind = {("place", "season"): "place_season", ("activity",): "activity",
                    ("place", "time_of_day"): "place_time", ("place",): "opening"}[key]  # fmt: skip
            seen[kind] += 1
            assert all(r == {} for r in requests[1:])
    assert all(seen.values()), seen
    held_out = eval_dialogues(4, seed=0)
    assert [d.id.split("-")[0] for d in held_out] == ["validation", "heldout"] * 2
    assert held_out[1].persona.held_out and not held_out[0].persona.held_out


def test_following_and_identity_scores_on_known_cases():
    requests = [{"place": "beach", "season": "summer"}, {"activity": "skiing"}]
    perfect = following_scores(requests, [{"place": "beach", "season": "summer"},
                                          {"activity": "skiing"}])  # fmt: skip
    assert dict(perfect) == {"place": [1.0], "season": [1.0], "activity": [1.0]}
    half = following_scores(requests, [{"place": "city", "season": "summer"}, None])
    assert dict(half) == {"place": [0.0], "season": [1.0], "activity": [0.0]}  # None: not drawn
    look = {"hair_colour": "red", "hair_style": "long", "skin_tone": "tan",
            "shirt_colour": "blue", "hat": "cap", "glasses": "none"}  # fmt: skip
    within, versus = identity_scores([look, look, look], look)
    assert all(v == 1.0 for v in within.values()) and all(v == 1.0 for v in versus.values())
    other = {**look, "hat": "beanie"}
    within, versus = identity_scores([look, other], look)
    assert within["hat"] == 0.0 and versus["hat"] == 0.5 and within["hair_colour"] == 1.0
    within, versus = identity_scores([other], look)
    assert within["hat"] is None and versus["hat"] == 0.0


def test_evaluate_chat_on_a_tiny_model(tmp_path):
    chat = build_chat()
    torch.manual_seed(0)
    judge = AttributeJudge(JudgeConfig.from_preset("tiny")).eval()
    report = evaluate_chat(
        chat, judge, num_dialogues=2, seed=0, out_dir=tmp_path, max_new_tokens=40
    )
    assert json.loads((tmp_path / "chat_eval.json").read_text()) == report
    assert report["dialogues"] == 2 and report["image_decoder"] == "vq_head"
    following = report["generation_following"]
    assert set(following) == {"per_attribute", "mean", "n_images"}
    assert set(following["per_attribute"]) <= {"place", "season", "activity", "time_of_day"}
    identity = report["identity_consistency"]
    assert set(identity) == {"within_dialogue", "vs_reference", "per_attribute",
                             "per_attribute_within"}  # fmt: skip
    assert set(identity["per_attribute"]) == set(identity["per_attribute_within"])
    understanding = report["understanding"]
    assert set(understanding) == {"accuracy", "per_question", "n"}
    validity = report["image_token_validity"]
    assert validity is None or 0 <= validity <= 1
    transcripts = report["transcripts"]
    assert len(transcripts) == 2
    for transcript, dialogue in zip(transcripts, eval_dialogues(2, seed=0), strict=True):
        assert transcript["id"] == dialogue.id
        roles = [m["role"] for m in dialogue.messages if m["role"] != "system"]
        assert [m["role"] for m in transcript["messages"]] == roles
        for message in transcript["messages"]:
            assert isinstance(message["text"], str)
            for path in message["images"]:
                assert path.startswith("images/") and (tmp_path / path).is_file()
        shown = sum(len(m["images"]) for m in transcript["messages"] if m["role"] == "user")
        truth = sum(p["type"] == "image" for m in dialogue.messages if m["role"] == "user"
                    for p in m["content"])  # fmt: skip
        assert shown == truth
    # with a bias towards pictures, every reply draws one: complete spans, judged, saved
    bias = {"sequence_bias": {(chat.vocab.boi_id,): 100.0}}
    drawn = evaluate_chat(chat, judge, num_dialogues=1, seed=0, out_dir=tmp_path / "d",
                          max_new_tokens=38, image_decoder="svq", **bias)  # fmt: skip
    assert drawn["image_token_validity"] == 1.0 and drawn["image_decoder"] == "svq"
    replies = [m for m in drawn["transcripts"][0]["messages"] if m["role"] == "assistant"]
    assert all(len(m["images"]) == 1 for m in replies)
    assert drawn["generation_following"]["n_images"] >= 1
    assert 0 <= drawn["identity_consistency"]["vs_reference"] <= 1
    cut = evaluate_chat(chat, None, num_dialogues=1, seed=0, out_dir=tmp_path / "c",
                        max_new_tokens=20, save_json=False, **bias)  # fmt: skip
    assert cut["image_token_validity"] == 0.0  # every span begun, none finished
    assert cut["generation_following"] is None and cut["identity_consistency"] is None
    assert not (tmp_path / "c" / "chat_eval.json").exists()
