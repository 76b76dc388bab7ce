"""The package's imports run one way: models (the tokenizer, codebook, data, LLM layer) <
evaluation < training < the app (CLI, demo). Every import in every module, lazy ones included,
is read from the source; an arrow back up the layers fails with its file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "svq"
LAYERS = ("models", "eval", "train", "app")
APP = ("svq.cli", "svq.__main__", "svq.commands", "svq.demo", "svq.demo_record")


def layer(module: str) -> int:
    """The layer of an `svq...` module name (models = 0 ... app = 3)."""
    if any(module == name or module.startswith(name + ".") for name in APP):
        return 3
    if module == "svq.train" or module.startswith("svq.train."):
        return 2
    if module == "svq.eval" or module.startswith("svq.eval."):
        return 1
    return 0


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every `svq` import in the file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from svq import train` names a module too
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, target) for line, target in found if target.split(".")[0] == "svq"]


def back_arrows() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = layer(module_name(path))
        for line, target in imports(path):
            if layer(target) > here:
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[here]}) imports "
                    f"{target} ({LAYERS[layer(target)]})"
                )
    return bad


def test_no_import_runs_back_up_the_layers():
    assert back_arrows() == []


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("svq.model", 0),
        ("svq.llm.chat", 0),
        ("svq.eval.chat_eval", 1),
        ("svq.train.common", 2),
        ("svq.commands.train", 3),
        ("svq.demo", 3),
        ("svq.demo_record", 3),
    ],
)
def test_layers_are_named_as_documented(module, expected):
    assert layer(module) == expected


def test_the_check_sees_a_back_arrow(tmp_path, monkeypatch):
    """A model module that imports the trainer (lazily, in a function) is caught."""
    pkg = tmp_path / "svq"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "common.py").write_text("from svq.model import X\n")
    (pkg / "model.py").write_text("def f():\n    from .train import common\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    assert back_arrows() == ["svq/model.py:2 (models) imports svq.train.common (train)"]
