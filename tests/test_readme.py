"""The README's Python snippets run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python snippet"
    monkeypatch.chdir(tmp_path)  # snippets write under runs/: keep it out of the checkout
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "runs" / "readme-model" / "model.safetensors").is_file()


def test_readme_demo_tables_are_generated_from_the_recorded_runs():
    """The README's demo figures are the committed records' (benchmarks/results/demo_*.json),
    rendered by `python -m svq.demo_record`: a figure edited by hand fails here."""
    from svq.demo_record import README_END, README_START, load_records, readme_tables

    records = load_records()
    for budget, record in records.items():
        assert record["budget"] == budget and record["commit"] and record["machine"]
        assert set(record["stage_seconds"]) >= {"stage1", "stage2", "sft", "report"}
    text = README.read_text()
    block = text[text.index(README_START) : text.index(README_END) + len(README_END)]
    assert block == readme_tables(records)
