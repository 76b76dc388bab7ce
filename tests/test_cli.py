import inspect
import json
import subprocess
import sys

import pytest

from svq import StyledVAEVQ
from svq.cli import build_parser, main
from svq.demo import DONE, ORDER, load_budget, pipeline_minutes, start_background, wait_for
from svq.demo_record import readme_tables
from svq.eval.report import build_report
from svq.llm import SVQChat
from svq.spatial_vq import SpatialVQ


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in [c for c in build_parser()._subparsers._group_actions[0].choices]:
        assert command in out
    assert "demo" in out


def test_console_script_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "svq", "demo", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--budget" in result.stdout


def test_every_command_has_help(capsys):
    for command in build_parser()._subparsers._group_actions[0].choices:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert "usage: svq" in capsys.readouterr().out


def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    """The whole pipeline at the test budget, in one process: every stage's release folder,
    a report with every section, the headline figures; a second run skips every stage."""
    run = tmp_path / "run"
    record = tmp_path / "results" / "demo_test.json"
    argv = ["demo", "--out", str(run), "--budget", "test", "--sequential"]
    assert main([*argv, "--record", str(record)]) == 0
    out = capsys.readouterr().out
    for stage in ORDER:
        assert f"[demo] {stage}: starting" in out and f"[demo] {stage}: done" in out
    assert StyledVAEVQ.from_pretrained(run / "stage2" / "model").codebook is not None
    assert StyledVAEVQ.from_pretrained(run / "stage1" / "model").codebook is None
    assert SpatialVQ.from_pretrained(run / "vq" / "model").num_tokens > 0
    assert SVQChat.from_pretrained(run / "sft" / "model").vocab.num_positions == 36
    report = json.loads((run / "report" / "report.json").read_text())
    sections = report["sections"]
    assert {name: s["status"] for name, s in sections.items()} == {
        name: "ok" for name in ("summary", "judge", "training", "reconstruction", "ordering",
                                "codebook", "baselines", "spatial_vq", "chat")
    }  # fmt: skip
    assert not sections["judge"]["passed"]  # a 2-step judge: its gate refuses it
    assert "judged figures refused" in sections["reconstruction"]["judge"]["skipped"]
    assert sections["chat"]["judge"]["status"] == "refused"
    assert sections["chat"]["generation_following"] is None
    assert sections["chat"]["baseline"]["dialogues"] >= 1  # the serial route beside the model
    assert SVQChat.from_pretrained(run / "baseline" / "model").config.image_tokenizer == "spatial"
    html = (run / "report" / "report.html").read_text()
    assert "<img" in html and 'src="data:image/png;base64,' in html
    result = json.loads((run / "demo.json").read_text())
    assert json.loads(record.read_text()) == result
    assert result["budget"] == "test" and result["figures"]["reconstruction"]["psnr_ids"] > 0
    assert set(result["stage_seconds"]) == set(ORDER) and result["settings"]["stage1"]
    assert result["reused_stages"] == [] and result["pipeline_minutes"] is not None
    assert result["figures"]["judge_gate"]["passed"] is False
    stage2 = result["stage2_validation"]  # stage 2's own pictures, around its fine-tune
    assert set(stage2) == {"before", "after"} and stage2["after"]["psnr_ids"] > 0
    questions = result["figures"]["chat"]["understanding"]["per_question"]
    assert questions and all(0 <= q["accuracy"] <= 1 for q in questions.values())
    tables = readme_tables({"test": result})  # what the README's tables are made of
    assert "| PSNR from the 36 ids / continuous |" in tables and "FAILED" in tables
    assert len(result["commit"] or "0" * 40) == 40 and result["machine"]["cpu_count"] >= 1
    assert "report: " in out and str(run / "report" / "report.html") in out
    assert "judge gate: FAILED, judged figures refused" in out
    assert "pictures that follow the request: not measured" in out
    # re-running skips what is finished
    (run / "report" / "report.json").unlink()  # ... except the report, which runs again
    assert main(argv) == 0
    out = capsys.readouterr().out
    for stage in ORDER[:-1]:
        assert f"[demo] {stage}: finished before, skipped" in out
    assert "[demo] report: starting" in out
    again = json.loads((run / "demo.json").read_text())
    assert again["reused_stages"] == list(ORDER[:-1])  # their stage times are the first run's
    assert again["pipeline_minutes"] == pipeline_minutes(again["stage_seconds"], parallel=False)
    assert "from stage times" in readme_tables({"test": again})


def test_pipeline_minutes_follows_the_two_process_schedule():
    """stage1 -> stage2 -> sft -> report in one process, judge -> vq -> baseline in the other;
    a stage waits for what it reads (baseline for stage2, report for baseline)."""
    minutes = {"judge": 1, "stage1": 10, "stage2": 2, "vq": 5, "sft": 7, "baseline": 20,
               "report": 1}  # fmt: skip
    seconds = {stage: 60 * m for stage, m in minutes.items()}
    assert pipeline_minutes(seconds) == 10 + 2 + 20 + 1  # baseline starts after stage2
    assert pipeline_minutes(seconds, parallel=False) == sum(minutes.values())
    seconds["baseline"] = 60  # now sft is the longer branch
    assert pipeline_minutes(seconds) == 10 + 2 + 7 + 1
    del seconds["vq"]
    assert pipeline_minutes(seconds) is None


def test_demo_second_process_runs_the_background_chain(tmp_path, capsys):
    run = tmp_path / "run"
    for stage in ("stage1", "stage2", "sft", "report"):  # only judge and vq left to do
        (run / DONE[stage]).parent.mkdir(parents=True, exist_ok=True)
        (run / DONE[stage]).write_text("{}")
    process = start_background(run, "test", ["judge", "vq"])
    wait_for(run, ("judge", "vq"), process)
    assert process.wait() == 0
    log = (run / "background.log").read_text()
    assert "[demo] judge: done" in log and "[demo] vq: done" in log
    assert start_background(run, "test", ["judge", "vq"]) is None  # nothing left
    # a second process that fails is an error naming what it left undone, with its log
    (run / DONE["vq"]).unlink()
    (run / "vq" / "model").rename(run / "vq" / "old")
    (run / "vq" / "model").write_text("not a folder")  # the spatial VQ cannot be saved there
    process = start_background(run, "test", ["vq"])
    with pytest.raises(RuntimeError, match=r"without finishing \['vq'\]"):
        wait_for(run, ("vq",), process)


def test_demo_bad_budget_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path), "--budget", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        load_budget("huge")


def test_demo_budgets_parse_for_every_stage(tmp_path):
    """Every budget's options are accepted by the stage's own parser (a typo in a budget file
    would otherwise surface minutes into a demo)."""
    from svq.demo import SCRIPT_TRAINERS, script_argv
    from svq.eval.judge import shipped_judge
    from svq.train import common, trainer
    from svq.train.judge import JudgeOptions

    for budget in ("test", "quick", "standard"):
        table = load_budget(budget)
        assert "max_minutes" not in table["judge"]  # budgets in steps, never in minutes
        if "shipped" in table["judge"]:
            assert set(table["judge"]) == {"shipped"}
            assert (shipped_judge(table["judge"]["shipped"]) / "model.safetensors").is_file()
        else:
            JudgeOptions(output_dir=str(tmp_path), **table["judge"])
        for stage, name in SCRIPT_TRAINERS.items():
            _, cls = trainer(name)
            options = common.parse_options(cls, script_argv(stage, table[stage], tmp_path))
            assert options.output_dir == str(tmp_path / stage)
            for key, value in table[stage].items():
                if key != "config":
                    assert getattr(options, key) == value, (budget, stage, key)
        assert set(inspect.signature(build_report).parameters) >= set(table["report"])


def test_demo_stages_take_the_idle_core_only_beside_another_process(tmp_path):
    from svq.demo import script_argv
    from svq.train import common, trainer

    table = load_budget("quick")
    _, cls = trainer("stage1")
    alone = common.parse_options(cls, script_argv("stage1", table["stage1"], tmp_path))
    beside = common.parse_options(cls, script_argv("stage1", table["stage1"], tmp_path, True))
    assert alone.threads_after is None
    assert beside.threads_after == str(tmp_path / DONE["vq"])  # the other process's last stage
    _, cls = trainer("sft")
    sft = common.parse_options(cls, script_argv("sft", table["sft"], tmp_path, True))
    assert sft.threads_after == str(tmp_path / DONE["baseline"])
