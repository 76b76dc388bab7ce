"""`svq eval ...`: every part has --help, writes its JSON (and PNGs), and fails clearly (exit
2, one line on stderr) on missing folders."""

import json

import pytest
import torch
from test_eval_report import tiny_run

from svq.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    return tiny_run(tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("part", ["reconstruction", "ordering", "codebook", "chat", "all"])
def test_every_part_has_help(part, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", part, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_reconstruction_of_the_tokenizer_and_of_the_spatial_vq(run, tmp_path, capsys):
    out = tmp_path / "rec"
    args = ["--num_images", "4", "--no_lpips", "--out", str(out)]
    assert main(["eval", "reconstruction", "--model", str(run / "stage2/model"), *args]) == 0
    result = json.loads((out / "reconstruction.json").read_text())
    assert result["quantised"]["psnr"] is not None and (out / "reconstruction.png").is_file()
    assert "quantised: PSNR" in capsys.readouterr().out
    # the run's judge is untrained: its gate refuses it, and nothing is judged
    judged = ["--judge", str(run / "judge"), "--out", str(tmp_path / "judged")]
    assert main(["eval", "reconstruction", "--model", str(run / "stage2/model"), *args[:3],
                 *judged]) == 0  # fmt: skip
    assert "judge: judged figures refused" in capsys.readouterr().out
    result = json.loads((tmp_path / "judged" / "reconstruction.json").read_text())
    assert result["judge"] == {"skipped": "no judge"}
    out = tmp_path / "vq"
    args = ["--num_images", "2", "--out", str(out)]
    assert main(["eval", "reconstruction", "--model", str(run / "vq/model"), *args]) == 0
    assert json.loads((out / "reconstruction.json").read_text())["grid_size"] == [4, 4]


def test_ordering_and_codebook(run, tmp_path):
    model = str(run / "stage2/model")
    args = ["--num_images", "4", "--out", str(tmp_path)]
    assert main(["eval", "ordering", "--model", model, *args, "--probe_images", "0"]) == 0
    ordering = json.loads((tmp_path / "ordering.json").read_text())
    assert len(ordering["prefix"]) == 37 and (tmp_path / "prefix.png").is_file()
    assert ordering["swap_test"] == {"skipped": "no judge"}
    assert main(["eval", "codebook", "--model", model, *args]) == 0
    assert json.loads((tmp_path / "codebook.json").read_text())["num_codes"] == 16


def test_missing_inputs_fail_clearly(run, tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert main(["eval", "all", "--run", str(tmp_path / "nope")]) == 2
    assert "run folder" in capsys.readouterr().err
    assert main(["eval", "reconstruction", "--model", str(tmp_path / "nope"), *out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "codebook", "--model", str(run / "stage1/model"), *out]) == 2
    assert "no codebook" in capsys.readouterr().err
    assert main(["eval", "chat", "--model", str(tmp_path / "nope"), *out]) == 2
    assert "svq eval: error: model folder" in capsys.readouterr().err


def test_all_writes_the_report(run, tmp_path, capsys):
    args = ["--num_images", "4", "--probe_images", "0", "--no_single", "--no_lpips",
            "--baseline_fit_images", "30"]  # fmt: skip
    assert main(["eval", "all", "--run", str(run), "--out", str(tmp_path), *args]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert all(s["status"] == "ok" for s in report["sections"].values())
    assert (tmp_path / "report.html").is_file()
    printed = capsys.readouterr().out
    assert "spatial_vq      ok" in printed and "report.html" in printed


def test_chat_passes_the_image_decoder(tmp_path, monkeypatch, capsys):
    """`svq eval chat --image_decoder svq` reaches evaluate_chat (model and evaluation faked:
    the real ones are tested in test_eval_chat.py)."""
    import svq.eval.chat_eval
    import svq.llm.chat

    calls = []

    def fake_evaluate(chat, judge, *, num_dialogues, seed, out_dir, lang, image_decoder, **_):
        calls.append((chat, num_dialogues, image_decoder))
        return {"dialogues": num_dialogues, "transcripts": []}

    monkeypatch.setattr(svq.eval.chat_eval, "evaluate_chat", fake_evaluate)
    monkeypatch.setattr(svq.llm.chat.SVQChat, "from_pretrained", classmethod(lambda cls, d: "chat"))
    (tmp_path / "model").mkdir()
    argv = ["eval", "chat", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o"),
            "--num_dialogues", "2", "--image_decoder", "svq"]  # fmt: skip
    assert main(argv) == 0
    assert calls == [("chat", 2, "svq")]
    assert json.loads((tmp_path / "o" / "chat_eval.json").read_text())["dialogues"] == 2
