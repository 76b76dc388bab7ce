"""build_report on a tiny run folder built here: every section present and rendered, pictures
inline, and "not run" sections (with their reason) when parts of the run are missing."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.data import ATTRIBUTES, IDENTITY_ATTRIBUTES
from svq.eval.chat_scores import Answer, DialogueRecord, Request, chat_scores
from svq.eval.gate import GateResult
from svq.eval.html import chat as render_chat
from svq.eval.judge import AttributeJudge, JudgeConfig
from svq.eval.report import SECTIONS, build_report, chat_section, prefix_with_judge
from svq.images import save_grid
from svq.spatial_vq import SpatialVQ, SpatialVQConfig

FAST = {"num_images": 6, "probe_images": 24, "lpips": None, "inception": None, "strict": True,
        "baseline_fit_images": 40}  # fmt: skip


def chat_figures(following: bool = True) -> dict:
    """The scores part of a chat_eval.json: two dialogues, one request each, one drawn and
    followed; four questions, one answered right."""
    look = dict(
        zip(IDENTITY_ATTRIBUTES, ("red", "long", "tan", "blue", "cap", "none"), strict=True)
    )
    scene = {**look, "place": "beach", "season": "summer", "activity": "hiking",
             "time_of_day": "day", "sea_of_clouds": "no"}  # fmt: skip
    records = [
        DialogueRecord(look, [Request({"place": "beach"}, True, scene)], [scene], [(1, 2)],
                       [Answer("season", "summer", True), Answer("season", "winter", False)]),
        DialogueRecord({**look, "hat": "none"}, [Request({"place": "city"}, False)], [], [],
                       [Answer("season", "summer", False), Answer("season", "winter", False)]),
    ]  # fmt: skip
    return chat_scores(records, judged=following)


def baseline_figures() -> dict:
    figures = chat_figures(following=False)
    figures["understanding"]["accuracy"] = 0.1
    return figures


def passed_gate(judge, image_size, **_) -> GateResult:
    """Stands in for svq.eval.gate.judge_gate, so that an untrained tiny judge exercises the judged
    paths (the real gate refusing it is tested below)."""
    return GateResult(True, 0.97, image_size, 2, dict.fromkeys(judge.attributes, 1.0), [])


def tiny_run(root: Path) -> Path:
    """RUN/stage1 (model, validation.jsonl, summary.json), RUN/stage2/model with
    codebook.safetensors, RUN/vq/model, RUN/judge (untrained tiny judge) and
    RUN/sft/chat_eval.json with one picture."""
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    model.save_pretrained(root / "stage1" / "model")
    (root / "stage1" / "validation.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "psnr": 10 + s / 10, "ssim": 0.1 * s}) for s in (1, 2))
    )
    (root / "stage1" / "summary.json").write_text(json.dumps({"steps": 2, "psnr": 10.2}))
    codes = torch.randn(16, model.config.token_dim, generator=torch.Generator().manual_seed(0))
    model.attach_codebook(Codebook.from_codes(codes)).save_pretrained(root / "stage2" / "model")
    SpatialVQ(SpatialVQConfig.from_preset("tiny")).save_pretrained(root / "vq" / "model")
    AttributeJudge(JudgeConfig.from_preset("tiny")).save_pretrained(root / "judge")
    sft = root / "sft"
    save_grid([torch.zeros(1, 3, 16, 16)], sft / "images" / "a.png", pad=0)
    chat_eval = {
        "dialogues": 2,
        "judge": {"status": "passed", "reason": "a made-up gate", "accuracy": {"place": 1.0}},
        **chat_figures(),
        "image_token_validity": 1.0,
        "transcripts": [
            {
                "id": "d0",
                "messages": [
                    {"role": "user", "text": "Draw <a> beach.", "images": []},
                    {"role": "assistant", "text": "Here.", "images": ["images/a.png"]},
                ],
            }
        ],
        "baseline": {"dialogues": 2, **baseline_figures()},
    }
    (sft / "chat_eval.json").write_text(json.dumps(chat_eval))
    return root


class Page(HTMLParser):
    """Collects section ids with their status, <img> sources, and anything fetched."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external, self.text = {}, [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections[attrs["id"]] = attrs["data-status"]
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link", "iframe") or (tag == "img" and "srcset" in attrs):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    run = tiny_run(tmp_path_factory.mktemp("run"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("svq.eval.report.judge_gate", passed_gate)
        return run, build_report(run, **FAST)


def test_every_section_runs_and_renders_with_pictures_inline(full_report):
    run, report = full_report
    out = run / "report"
    assert json.loads((out / "report.json").read_text()) == report
    assert list(report["sections"]) == list(SECTIONS)
    assert {n: s["status"] for n, s in report["sections"].items()} == dict.fromkeys(SECTIONS, "ok")
    page = parse(out / "report.html")
    assert page.sections == dict.fromkeys(SECTIONS, "ok")
    assert page.external == []
    # grids (reconstruction, spatial VQ), plots (training, prefix, ablation, probes, usage) and
    # the chat picture, every one a data URI
    assert len(page.images) == 8
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    text = " ".join(page.text)
    assert "Draw <a> beach." in text  # the transcript, escaped and shown as written
    for name in ("reconstruction.png", "spatial_vq.png", "prefix.png", "probes.png"):
        assert (out / name).is_file()


def test_report_contents(full_report):
    _, report = full_report
    s = report["sections"]
    rec = s["reconstruction"]
    assert rec["quantised"]["psnr"] is not None and "gap_db" in rec
    assert set(rec["judge"]) == {"originals", "continuous", "quantised", "mean", "gate"}
    assert s["judge"]["passed"] and set(s["judge"]["accuracy"]) == set(ATTRIBUTES)
    assert "LPIPS not requested" in rec["notes"]["lpips"]
    assert "inception" in rec["notes"]["rfid"].lower()
    assert [r["k"] for r in s["ordering"]["prefix"]] == list(range(37))
    assert "judge_mean" in s["ordering"]["prefix"][0]
    assert len(s["ordering"]["probes"]["accuracy"]) == 36
    assert s["codebook"]["num_codes"] == 16
    assert s["spatial_vq"]["image_size"] == 16
    assert s["chat"]["understanding"]["accuracy"] == 0.25
    assert s["chat"]["understanding"]["blind_majority"] == 0.5
    assert s["codebook"]["bits_per_image"]["nominal"] == 36 * 4  # K = 16
    assert 0 <= s["codebook"]["bits_per_image"]["carried"] <= 36 * 4
    names = [row["name"] for row in s["baselines"]["rows"]]
    assert names[:4] == ["mean picture", "thumbnail 4x4", "thumbnail 8x8", "thumbnail 16x16"]
    assert len(names) == 6 and names[-1].endswith("(= the ids' bits)")
    labels = {row["label"] for row in s["summary"]["headline"]}
    assert {"PSNR, quantised tokens", "chat: understanding accuracy",
            "chat: understanding, blind majority", "chat: following, chance level",
            "baseline: mean picture", "bits per image the ids carry",
            "judge gate: lowest accuracy on clean renders"} <= labels  # fmt: skip


def test_a_judge_that_fails_its_gate_scores_nothing(tmp_path):
    run = tiny_run(tmp_path / "run")  # its judge is untrained
    report = build_report(run, **{**FAST, "single_tokens": False})
    s = report["sections"]
    assert s["judge"]["status"] == "ok" and not s["judge"]["passed"]
    assert set(s["judge"]["failing"]) == set(ATTRIBUTES)
    assert "judged figures refused" in s["reconstruction"]["judge"]["skipped"]
    assert "judge_mean" not in s["ordering"]["prefix"][0]
    assert s["ordering"]["swap_test"] == {"skipped": "no judge"}
    labels = {row["label"] for row in s["summary"]["headline"]}
    assert not any(label.startswith("judge on") for label in labels)
    page = " ".join(parse(run / "report" / "report.html").text)
    assert "FAILED: judged figures are refused" in page


def test_missing_parts_are_not_run_with_a_reason(tmp_path):
    run = tiny_run(tmp_path / "run")
    shutil.rmtree(run / "stage2")
    shutil.rmtree(run / "vq")
    shutil.rmtree(run / "judge")
    (run / "sft" / "chat_eval.json").unlink()
    report = build_report(run, tmp_path / "out", **FAST)
    s = report["sections"]
    assert s["reconstruction"]["status"] == "ok"  # stage 1 model, continuous only
    assert "no codebook" in s["reconstruction"]["quantised"]["skipped"]
    assert "no judge" in s["reconstruction"]["judge"]["skipped"]
    assert s["codebook"] == {"status": "not run", "reason": s["codebook"]["reason"]}
    assert "no codebook" in s["codebook"]["reason"]
    assert s["spatial_vq"]["status"] == "not run" and "vq/model" in s["spatial_vq"]["reason"]
    assert s["chat"]["status"] == "not run" and "chat_eval.json" in s["chat"]["reason"]
    page = parse(tmp_path / "out" / "report.html")
    assert set(page.sections) == set(SECTIONS)
    assert page.sections["chat"] == "not run"
    assert any("not run: no chat evaluation" in t for t in page.text)


def test_an_empty_run_folder_gives_a_report_of_not_run_sections(tmp_path):
    report = build_report(tmp_path, **FAST)
    states = {n: s["status"] for n, s in report["sections"].items()}
    assert states == {"summary": "ok", **dict.fromkeys(SECTIONS[1:], "not run")}
    assert "stage1/model" in report["sections"]["reconstruction"]["reason"]
    assert set(parse(tmp_path / "report" / "report.html").sections) == set(SECTIONS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_chat_can_be_evaluated_afresh(tmp_path, monkeypatch):
    """--rerun_chat: chat_eval.evaluate_chat on RUN/sft/model (both faked here: the real ones
    are tested in their own files); its chat_eval.json lands in the report folder."""
    import svq.eval.chat_eval
    import svq.llm.chat

    run = tmp_path / "run"
    (run / "sft" / "model").mkdir(parents=True)
    calls = []

    def fake_evaluate(chat, judge, *, num_dialogues, seed, out_dir, lang="en", **_):
        calls.append((chat, judge, num_dialogues, seed, lang))
        return {"dialogues": num_dialogues, "understanding": {"accuracy": 0.5}, "transcripts": []}

    monkeypatch.setattr(svq.eval.chat_eval, "evaluate_chat", fake_evaluate)
    monkeypatch.setattr(svq.llm.chat.SVQChat, "from_pretrained", classmethod(lambda cls, d: "chat"))
    report = build_report(run, rerun_chat=True, chat_dialogues=3, **FAST)
    chat = report["sections"]["chat"]
    assert chat["status"] == "ok" and chat["dialogues"] == 3
    assert calls == [("chat", None, 3, 0, "en")]
    assert (run / "report" / "chat" / "chat_eval.json").is_file()


def test_the_chat_pinned_to_a_reference_goes_beside_the_model(tmp_path, monkeypatch):
    """chat_pin_identity: RUN/sft/model evaluated again with those tokens pinned (faked here;
    evaluate_chat's pins are tested in test_eval_chat.py), as the "pinned" route of the chat
    section, its HTML table and the README's rows."""
    import svq.eval.chat_eval
    import svq.llm.chat
    from svq.demo_record import readme_tables, report_figures

    run = tiny_run(tmp_path / "run")
    (run / "sft" / "model").mkdir(parents=True, exist_ok=True)
    calls = []

    def fake_evaluate(chat, judge, *, num_dialogues, seed, out_dir, pin_identity=None, **_):
        calls.append(list(pin_identity))
        identity = {"within_dialogue": {"value": 0.9}, "vs_persona": {"value": 0.8}}
        return {"dialogues": num_dialogues, "identity_consistency": identity,
                "understanding": {"accuracy": 0.5}, "transcripts": []}  # fmt: skip

    monkeypatch.setattr(svq.eval.chat_eval, "evaluate_chat", fake_evaluate)
    monkeypatch.setattr(svq.llm.chat.SVQChat, "from_pretrained", classmethod(lambda cls, d: "chat"))
    report = build_report(run, chat_dialogues=3, chat_pin_identity=[6, 12], **FAST)
    chat = report["sections"]["chat"]
    assert calls == [list(range(6, 12))] and report["settings"]["chat_pin_identity"] == [6, 12]
    assert chat["pinned"]["dialogues"] == 3 and "transcripts" not in chat["pinned"]
    assert (run / "report" / "chat_pinned" / "chat_eval.json").is_file()
    assert "<th>model, person&#x27;s tokens pinned</th>" in render_chat(chat, run / "report")
    record = {"commit": None, "wall_minutes": 1, "figures": report_figures(report)}
    assert "pinned to a reference: within / vs persona | 90.0% / 80.0% | — |" in readme_tables(
        {"test": record}
    )
    record["figures"]["chat_pinned"] = None  # no record measured it: no pinned rows
    assert "pinned" not in readme_tables({"test": record})
    with pytest.raises(ValueError, match="START, STOP"):
        build_report(run, chat_pin_identity=[6], **FAST)


def test_a_quick_judge_trained_into_the_run_is_reported(tmp_path):
    from svq.train.judge import train

    options = {"preset": "tiny", "image_size": 32, "max_steps": 2, "eval_images": 8,
               "dataloader_num_workers": 0}  # fmt: skip
    assert train(tmp_path / "judge", **options) == tmp_path / "judge"
    report = build_report(tmp_path, **FAST)
    training = report["sections"]["training"]
    assert training["status"] == "ok" and training["judge"]["steps"] == 2
    assert set(training["judge"]["accuracy"]["validation"]) == set(ATTRIBUTES)
    assert report["settings"]["judge"] == str(tmp_path / "judge")


def test_prefix_with_judge_matches_the_prefix_curve_on_a_planted_ordering():
    from test_eval_ordering import Toy, toy_images

    from svq.eval.ordering import encode_all, prefix_curve

    model = Toy(used=range(2))  # tokens 2.. dead: the curve rises twice, then stays flat
    images = toy_images(Toy())
    rows = prefix_with_judge(model, images, None, None, encode_all(model, images))
    expected = prefix_curve(model, images)
    assert [r["psnr"] for r in rows] == pytest.approx([r["psnr"] for r in expected])
    assert rows[2]["psnr"] > rows[1]["psnr"] > rows[0]["psnr"]
    assert "judge_mean" not in rows[0]


def test_the_serial_baseline_run_goes_beside_the_model(tmp_path):
    """RUN/baseline/chat_eval.json (the demo's serial spatial route) becomes the chat
    section's "baseline" column; its transcripts stay out."""
    run = tiny_run(tmp_path / "run")
    data = json.loads((run / "sft" / "chat_eval.json").read_text())
    baseline = {**data.pop("baseline"), "transcripts": data["transcripts"]}
    (run / "sft" / "chat_eval.json").write_text(json.dumps(data))
    (run / "baseline").mkdir()
    (run / "baseline" / "chat_eval.json").write_text(json.dumps(baseline))
    section = chat_section(run, tmp_path / "out")
    assert section["baseline"]["understanding"]["accuracy"] == 0.1
    assert "transcripts" not in section["baseline"]
    assert len(section["transcripts"]) == 1
    html = render_chat(section, tmp_path / "out")
    assert "<th>baseline</th>" in html and "10.0% [" in html
