"""svq.eval.chat_eval and svq.eval.chat_scores: the scoring rules on hand-made cases (a right answer
scores 1, a wrong or ambiguous one 0; requests read from the talk), the controls (a constant
picture scores 0 on control-corrected identity and no more than the constant baseline on
following; the blind majority answer), and `evaluate_chat` on a tiny model: the schema,
transcripts, picture files, and the judge's gate refusing an untrained judge."""

import json

import numpy as np
import pytest
import torch
from test_llm_tiny import build_chat

from svq.data import IDENTITY_ATTRIBUTES, SCHEMA, render
from svq.data.dialogues import PHRASES
from svq.eval.chat_eval import (
    answer_phrases,
    answer_value,
    eval_dialogues,
    evaluate_chat,
    last_assistant_ids,
    persona_reference,
    question_topic,
    requested,
    score_answer,
)
from svq.eval.chat_scores import (
    Answer,
    DialogueRecord,
    Request,
    chat_scores,
    following_scores,
    identity_scores,
    understanding_scores,
)
from svq.eval.gate import GateResult
from svq.eval.judge import AttributeJudge, JudgeConfig


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


def _looks(n: int, seed: int = 0) -> list[dict[str, str]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {a: SCHEMA[a][torch.randint(len(SCHEMA[a]), (1,), generator=g).item()]
         for a in IDENTITY_ATTRIBUTES}
        for _ in range(n)
    ]  # fmt: skip


def _scene(look: dict[str, str], place: str) -> dict[str, str]:
    return {**look, "place": place, "season": "summer", "activity": "hiking",
            "time_of_day": "day", "sea_of_clouds": "no"}  # fmt: skip


def test_following_on_known_cases_with_chance_and_the_constant_baseline():
    places = SCHEMA["place"]
    look = _looks(1)[0]
    records = []
    for i in range(40):  # each dialogue asks for two places; the model draws the first only
        asked = [places[i % 4], places[(i + 1) % 4]]
        records.append(DialogueRecord(persona=look, requests=[
            Request({"place": asked[0]}, True, _scene(look, asked[0])),
            Request({"place": asked[1]}, False, None),
        ]))  # fmt: skip
    scores = following_scores(records)
    assert scores["mean"] == 1.0 and scores["ci"] == (1.0, 1.0)  # every drawn picture follows
    assert scores["mean_all_requests"]["value"] == 0.5  # the undrawn count as wrong there
    place = scores["per_attribute"]["place"]
    assert place["chance"] == 1 / len(places) and place["best_constant"] == 0.25
    assert chat_scores(records, judged=True)["pictures_drawn"]["value"] == 0.5
    # one constant picture: following at the constant baseline, below the interval of a model
    constant = [
        DialogueRecord(persona=look, requests=[Request(r.pinned, True, _scene(look, places[0]))
                                               for r in rec.requests])
        for rec in records
    ]  # fmt: skip
    collapsed = following_scores(constant)
    assert collapsed["mean"] == pytest.approx(collapsed["best_constant"])
    low, high = collapsed["ci"]
    assert low <= 0.25 <= high < 0.5


def test_identity_control_gives_zero_for_a_constant_picture_and_one_for_a_faithful_model():
    personas = _looks(30)
    constant_look = personas[0]
    constant = [DialogueRecord(persona=p, pictures=[constant_look] * 3) for p in personas]
    faithful = [DialogueRecord(persona=p, pictures=[p] * 3) for p in personas]
    c, f = identity_scores(constant), identity_scores(faithful)
    assert c["within_dialogue"]["raw"] == 1.0  # what the uncorrected figure rewarded
    assert c["within_dialogue"]["value"] == 0.0 and c["within_dialogue"]["control"] == 1.0
    assert abs(c["vs_persona"]["value"]) < 0.1  # matches its persona no more than the others
    assert f["within_dialogue"]["value"] == 1.0 and f["vs_persona"]["value"] == 1.0
    low, high = f["within_dialogue"]["ci"]
    assert low == high == 1.0
    assert 0 < f["within_dialogue"]["control"] < 1  # different personas share some values
    # a dialogue of one picture has no within-dialogue pair
    single = identity_scores([DialogueRecord(persona=p, pictures=[p]) for p in personas])
    assert single["dialogues_with_2_pictures"] == 0 and single["within_dialogue"]["value"] is None


def test_understanding_beside_the_blind_majority_answer():
    seasons = ["summer"] * 6 + ["winter"] * 4
    records = [
        DialogueRecord(persona={}, answers=[Answer("season", truth, correct=truth == "winter")])
        for truth in seasons
    ]
    scores = understanding_scores(records)
    assert scores["accuracy"] == 0.4 and scores["blind_majority"] == 0.6 and scores["n"] == 10
    assert scores["per_question"]["season"] == {"accuracy": 0.4, "blind_majority": 0.6, "n": 10}
    low, high = scores["ci"]
    assert 0.0 <= low < 0.4 < high <= 1.0


def test_a_judge_that_fails_its_gate_scores_nothing(tmp_path):
    chat = build_chat()
    torch.manual_seed(0)
    untrained = AttributeJudge(JudgeConfig.from_preset("tiny")).eval()
    report = evaluate_chat(chat, untrained, num_dialogues=1, seed=0, out_dir=tmp_path,
                           max_new_tokens=20)  # fmt: skip
    assert report["judge"]["status"] == "refused" and not report["judge"]["passed"]
    assert "judged figures refused" in report["judge"]["reason"]
    assert report["generation_following"] is None and report["identity_consistency"] is None
    assert report["understanding"]["n"] >= 0  # needs no judge


def _passed_gate(judge: AttributeJudge, size: int) -> GateResult:
    """A gate result marked as passed: lets the tiny tests exercise the judged paths with an
    untrained judge (the refusing path is tested above)."""
    accuracy = dict.fromkeys(judge.attributes, 1.0)
    return GateResult(True, 0.97, size, 2, accuracy, [])


def test_evaluate_chat_on_a_tiny_model(tmp_path):
    chat = build_chat()
    torch.manual_seed(0)
    judge = AttributeJudge(JudgeConfig.from_preset("tiny")).eval()
    gate = _passed_gate(judge, chat.svq.config.image_size)
    report = evaluate_chat(
        chat, judge, num_dialogues=2, seed=0, out_dir=tmp_path, max_new_tokens=40, gate=gate
    )
    assert json.loads((tmp_path / "chat_eval.json").read_text()) == json.loads(json.dumps(report))
    assert report["dialogues"] == 2 and report["image_decoder"] == "vq_head"
    assert report["judge"]["status"] == "passed"
    following = report["generation_following"]
    assert {"mean", "ci", "chance", "best_constant", "mean_all_requests",
            "per_attribute"} <= set(following)  # fmt: skip
    assert set(following["per_attribute"]) <= {"place", "season", "activity", "time_of_day"}
    identity = report["identity_consistency"]
    assert set(identity) == {"within_dialogue", "vs_persona", "dialogues_with_2_pictures"}
    assert {"pictures", "distinct_id_sequences", "distinct_readings"} <= set(report["diversity"])
    understanding = report["understanding"]
    assert {"accuracy", "ci", "blind_majority", "per_question", "n"} <= set(understanding)
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
                          max_new_tokens=38, image_decoder="svq", gate=gate, **bias)  # fmt: skip
    assert drawn["image_token_validity"] == 1.0 and drawn["image_decoder"] == "svq"
    replies = [m for m in drawn["transcripts"][0]["messages"] if m["role"] == "assistant"]
    assert all(len(m["images"]) == 1 for m in replies)
    assert drawn["pictures_drawn"]["value"] == 1.0
    assert drawn["diversity"]["pictures"] == len(replies)
    identity = drawn["identity_consistency"]["vs_persona"]
    assert 0 <= identity["raw"] <= 1 and identity["value"] is None  # no other persona: no control
    cut = evaluate_chat(chat, None, num_dialogues=1, seed=0, out_dir=tmp_path / "c",
                        max_new_tokens=20, save_json=False, **bias)  # fmt: skip
    assert cut["image_token_validity"] == 0.0  # every span begun, none finished
    assert cut["generation_following"] is None and cut["identity_consistency"] is None
    assert not (tmp_path / "c" / "chat_eval.json").exists()


def test_pinned_identity_comes_from_the_dialogue_or_a_reference_of_the_persona(tmp_path):
    chat = build_chat(spatial=False)
    chat.config.image_decoder = "svq"
    seen = []  # (prompt, pins, reply) of every generated turn
    generate = chat.generate

    def spy(prompts, pinned_ids=None, **kwargs):
        replies = generate(prompts, pinned_ids=pinned_ids, **kwargs)
        seen.extend(zip(prompts, pinned_ids, replies, strict=True))
        return replies

    chat.generate = spy
    bias = {"sequence_bias": {(chat.vocab.boi_id,): 100.0}}
    report = evaluate_chat(chat, None, num_dialogues=2, seed=0, out_dir=tmp_path,
                           max_new_tokens=38, pin_identity=range(6, 12), **bias)  # fmt: skip
    pins = report["identity_pins"]
    assert pins["positions"] == list(range(6, 12))
    assert pins["from"]["reference"] == 2 and pins["from"]["dialogue"] == len(seen) - 2
    dialogues = eval_dialogues(2, seed=0)
    size = chat.svq.config.image_size
    for prompt, pinned, reply in seen:
        assert pinned[:6].eq(-1).all() and pinned[12:].eq(-1).all()
        (picture,) = [p for p in reply["content"] if p["type"] == "image"]
        assert torch.equal(picture["ids"][6:12], pinned[6:12])  # the pins were written
        earlier = last_assistant_ids(prompt)
        if earlier is not None:
            assert torch.equal(pinned[6:12], earlier[6:12])
    firsts = [pin for prompt, pin, _ in seen if last_assistant_ids(prompt) is None]
    for dialogue, pin in zip(dialogues, firsts, strict=True):  # turns in dialogue order
        reference = persona_reference(dialogue, seed=0)  # the persona, in a scene of its own
        assert reference.identity == dialogue.persona
        assert (tmp_path / f"images/{dialogue.id}-reference.png").is_file()
        pixels = torch.from_numpy(np.array(render(reference, size), dtype=np.float32))
        ids = chat.svq.tokenize(pixels.permute(2, 0, 1)[None] / 127.5 - 1)[0]
        assert torch.equal(pin[6:12], ids[6:12])
    chat.generate = generate
    without = evaluate_chat(chat, None, num_dialogues=1, seed=0, out_dir=tmp_path / "n",
                            max_new_tokens=38, save_json=False, **bias)  # fmt: skip
    assert without["identity_pins"] is None
