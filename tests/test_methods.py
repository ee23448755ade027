"""The method registry is the one list of methods, config.py the one home of defaults, and nothing imports the CLI."""

import ast
import re
from pathlib import Path

import pytest

from alignlab import config, methods
from alignlab.config import ProjectConfig
from alignlab.data.formats import KINDS, METHOD_KIND
from alignlab.errors import AlignlabError

SRC = Path(__file__).resolve().parents[1] / "src" / "alignlab"


def _string_constants(path: Path) -> set[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs}


def _modules_with(literal: str) -> list[str]:
    return sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if literal in _string_constants(p))


@pytest.mark.parametrize("name", ["dpo", "ipo", "simpo", "orpo", "kto", "grpo", "rloo", "ppo"])
def test_each_method_name_is_written_in_the_registry_only(name):
    assert name in methods.NAMES
    assert _modules_with(name) == ["methods.py"]


def test_defaults_are_written_in_config_only():
    assert _modules_with(config.DEFAULT_MODEL) == ["config.py"]
    assert _modules_with(config.DEFAULT_PERSONA) == ["config.py"]


def test_nothing_outside_the_cli_imports_it():
    offenders = []
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [f"{n.module}.{a.name}" for a in n.names] if isinstance(n, ast.ImportFrom) and n.module else []
            offenders += [f"{rel}: {x}" for x in names if x == "alignlab.cli" or x.startswith("alignlab.cli.")]
    assert offenders == []


def test_only_the_cli_imports_the_workflows():
    """workflows/ chains runs over train, eval and the rest; nothing below it may import it."""
    offenders = []
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC)
        if rel.parts[0] in ("cli", "workflows") or rel.name == "__main__.py":
            continue
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [f"{n.module}.{a.name}" for a in n.names] if isinstance(n, ast.ImportFrom) and n.module else []
            offenders += [f"{rel}: {x}" for x in names if x.startswith("alignlab.workflows")]
    assert offenders == []


def test_every_record_points_at_real_config_data_and_recipe():
    cfg = ProjectConfig()
    for m in methods.REGISTRY.values():
        assert m.kind in KINDS and METHOD_KIND[m.name] == m.kind
        assert all(hasattr(cfg, s) for s in m.sections), m.name
        if m.beta is not None:
            section, key = m.beta.split(".")
            assert section in m.sections and hasattr(getattr(cfg, section), key), m.name
        recipe = m.load_recipe()
        assert callable(recipe.check)
        assert callable(recipe.train_loop if m.own_loop else recipe.build_trainer), m.name
        assert not (m.online and m.reference_free)  # the KL leash needs the reference


def test_helpers_and_unknown_names():
    assert methods.names(online=True) == (methods.GRPO, methods.RLOO, methods.PPO)
    assert methods.names(loop=True) == (methods.DPO, methods.KTO)
    assert methods.is_online(methods.PPO) and not methods.is_online(methods.DPO) and not methods.is_online("nope")
    assert methods.help_list((methods.DPO, methods.KTO)) == "dpo or kto"
    with pytest.raises(AlignlabError, match="unknown method 'dpx'"):
        methods.get("dpx")


@pytest.mark.parametrize("module", ["methods.py", "config.py"])
def test_registry_and_config_are_the_bottom_layer(module):
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("alignlab")} <= {"alignlab.errors"}


def test_the_bottom_layer_imports_nothing_above_it():
    """models/, data/, losses/, config.py and the run directory (rundir.py) sit below training, evaluation,
    serving, feedback and orchestration: none of their imports, lazy ones included, reaches up."""
    upper = ("alignlab.train", "alignlab.eval", "alignlab.serve", "alignlab.feedback", "alignlab.workflows", "alignlab.cli")
    bottom = ("config.py", "rundir.py", "fsutil.py", "errors.py", "paths.py", "methods.py")
    offenders = []
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC)
        if not (rel.parts[0] in ("models", "data", "losses") or str(rel) in bottom):
            continue
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [f"{n.module}.{a.name}" for a in n.names] if isinstance(n, ast.ImportFrom) and n.module else []
            offenders += [f"{rel}: {x}" for x in names if x.startswith(upper)]
    assert offenders == []
    assert not (SRC / "train" / "rundir.py").exists()  # the run directory has one home


def test_no_function_in_src_is_longer_than_80_lines():
    long = []
    for p in SRC.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80:
                long.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert long == []


def test_each_loss_is_used_by_training_or_named_a_test_oracle():
    from alignlab import losses

    assert sorted(losses.TRAINING + losses.ORACLES) == sorted(losses.__all__)
    train_src = "\n".join(p.read_text(encoding="utf-8") for p in (SRC / "train").rglob("*.py"))
    test_src = "\n".join(p.read_text(encoding="utf-8") for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n in losses.TRAINING if n not in train_src] == []
    assert [n for n in losses.ORACLES if re.search(rf"\b{n}\(", train_src)] == []  # oracles only check TRL
    assert [n for n in losses.ORACLES if n not in test_src] == []
