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
