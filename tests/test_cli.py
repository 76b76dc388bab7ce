import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from svq import StyledVAEVQ
from svq.cli import build_parser, main


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
    assert "--steps" in result.stdout


def test_demo_writes_reconstructions_and_a_loadable_model(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "3"]) == 0
    assert "held-out PSNR" in capsys.readouterr().out
    grid = Image.open(tmp_path / "reconstructions.png")
    assert grid.size[0] > grid.size[1] > 64  # two rows of 32px pictures, side by side
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["held_out_psnr_db"] > 0
    model = StyledVAEVQ.from_pretrained(tmp_path / "model")
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 36, 16)


def test_demo_bad_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
