"""svq.configs: the shipped option files are package data, read by name or by path; the
training scripts' parser takes either."""

from __future__ import annotations

import re

import pytest

from svq.configs import CONFIGS, config_path, shipped, shipped_config
from svq.train.common import parse_options
from svq.train.stage1 import Stage1Options


def test_shipped_names_resolve_with_or_without_suffix():
    assert "stage1_tiny" in shipped() and "demo_quick" in shipped()
    assert shipped_config("stage1_tiny") == CONFIGS / "stage1_tiny.yaml"
    assert config_path("stage1_tiny.yaml") == CONFIGS / "stage1_tiny.yaml"


def test_a_file_of_ones_own_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stage1_tiny.yaml").write_text("max_steps: 7\n")
    assert config_path("stage1_tiny.yaml").resolve() == (tmp_path / "stage1_tiny.yaml").resolve()
    assert parse_options(Stage1Options, ["stage1_tiny.yaml", "--output_dir", "o"]).max_steps == 7
    # the shipped file by name when no file of that name is here
    (tmp_path / "stage1_tiny.yaml").unlink()
    shipped_steps = parse_options(Stage1Options, ["stage1_tiny", "--output_dir", "o"]).max_steps
    assert shipped_steps == 2  # svq/configs/stage1_tiny.yaml


def test_an_unknown_config_names_itself_and_the_shipped_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config file nope does not exist.*stage1_tiny"):
        config_path("nope")
    gone = tmp_path / "gone.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape(f"config file {gone} does not exist")):
        config_path(gone)
    with pytest.raises(FileNotFoundError, match=r"sub/stage1_tiny\.yaml does not exist"):
        shipped_config("sub/stage1_tiny.yaml")  # a shipped name has no folder
