"""Layered rewards from a YAML spec: weighted components, a cap, a diversity penalty.

    components:
      - {name: heuristic, fn: persona_heuristic, weight: 0.4}
      - {name: judge, fn: llm_judge, weight: 0.5, args: {base_url: "http://127.0.0.1:8000/v1", model: x}}
      - {name: length, fn: length_penalty, weight: -0.1, args: {target: 60}}
      - {name: custom, fn: mymod.py:my_reward, weight: 1.0}
    cap: 1.0
    diversity: {weight: 0.1}

    total = min(cap, sum_i weight_i * component_i) - diversity.weight * diversity_penalty

Several signals are harder to game at once than one; the cap removes the incentive to push any one of them
to an extreme; the diversity penalty (see ``diversity.py``) works against collapse onto one template.
The cap is applied before the diversity penalty, so a capped completion still pays for being a copy.

``fn`` is a built-in name (``REGISTRY``, the extension point: add entries with ``register_reward``) or
``file.py:function`` (a path relative to the YAML's directory) for a user's own
``fn(prompts, completions, **columns) -> list[float]``; ``args`` are keyword arguments for the built-in's
constructor or bound to the user's function. Everything is checked before any component is built, and
every error is one line with ``file:line``.

A user's file is Python that runs when imported, so: checking a spec (``check_only=True``, what
``alignlab train`` does before the model loads) reads the file without running it (it must parse and define
the function with the right signature, a plain def); building imports it, once per process (later builds reuse
the module), with its own directory on sys.path while it is imported (so it imports modules beside it); and the
file must lie inside the project directory (the nearest directory above the spec holding alignlab.yaml, else the
spec's own directory), symlinks resolved, unless ``allow_outside=True`` or the environment sets
``ALIGNLAB_ALLOW_OUTSIDE_REWARDS=1``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from alignlab.errors import AlignlabError
from alignlab.rewards.classifier import ClassifierReward
from alignlab.rewards.common import check_rewards, completion_text, decode_columns, groups, read_text
from alignlab.rewards.diversity import DiversityPenalty, similarity_penalty
from alignlab.rewards.heuristics import PersonaHeuristic
from alignlab.rewards.judge import LLMJudge
from alignlab.rewards.length import LengthPenalty
from alignlab.rewards.rm import RewardModel
from alignlab.rewards.verifiable import AnswerMatch, ArithmeticMatch, FormatCheck


@dataclass(frozen=True)
class Builtin:
    factory: Callable[..., Callable]  # **args -> reward function
    help: str
    path_args: tuple[str, ...] = ()  # args that are paths, resolved relative to the spec's directory


REGISTRY: dict[str, Builtin] = {
    "persona_heuristic": Builtin(PersonaHeuristic, "regex persona markers minus hedges, saturating, in (-1, 1)"),
    "length_penalty": Builtin(LengthPenalty, "0 up to target words, 1 at twice the target (give it a negative weight)"),
    "diversity_penalty": Builtin(DiversityPenalty, "MiniLM similarity to the rest of the group, in [0, 1]"),
    "arithmetic": Builtin(ArithmeticMatch, "1 when the last number equals the answer column"),
    "exact_match": Builtin(AnswerMatch, "1 when the completion matches an alias in the answer column"),
    "format_check": Builtin(FormatCheck, "1 when the completion matches a regex"),
    "llm_judge": Builtin(LLMJudge, "an OpenAI-compatible judge's rubric score, in [0, 1]"),
    "persona_classifier": Builtin(ClassifierReward, "a saved persona classifier's probability", ("path",)),
    "reward_model": Builtin(RewardModel, "a trained reward-model run's score (unbounded)", ("run",)),
}

TOP_KEYS = ("components", "cap", "diversity", "gold")  # gold: a watch-only rater, read by train/monitors.py
COMPONENT_KEYS = ("name", "fn", "weight", "args")
DIVERSITY_KEYS = ("weight", "group_size")
RESERVED = ("total", "diversity")


def register_reward(
    name: str, factory: Callable[..., Callable], help: str = "", path_args: tuple[str, ...] = ()
) -> None:
    """Make ``fn: name`` available in specs; ``factory(**args)`` returns the reward function."""
    REGISTRY[name] = Builtin(factory, help, path_args)


@dataclass
class Component:
    name: str
    fn: Callable
    weight: float
    source: str  # the spec's fn value
    where: str = ""  # file:line of its entry


@dataclass
class ComposedReward:
    """A TRL-compatible reward function returning the composed total; see the module docstring.

    ``components(...)`` gives every component's raw values (and ``diversity`` when configured) for logging;
    ``reward_funcs`` / ``weights`` are the same pieces for TRL's ``reward_funcs`` + ``reward_weights``
    (TRL sums them without the cap).
    """

    parts: list[Component]
    cap: float | None = None
    diversity_weight: float = 0.0
    group_size: int | None = None
    source: str = ""

    __name__ = "composed_reward"  # what TRL shows in its logs

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.parts] + (["diversity"] if self.diversity_weight else [])

    @property
    def reward_funcs(self) -> list[Callable]:
        extra = [DiversityPenalty(self.group_size)] if self.diversity_weight else []
        return [c.fn for c in self.parts] + extra

    @property
    def weights(self) -> list[float]:
        return [c.weight for c in self.parts] + ([-self.diversity_weight] if self.diversity_weight else [])

    def components(self, prompts: list, completions: list, **columns) -> dict[str, list[float | None]]:
        """Each component's raw values (before weighting), keyed by name; checked for count and finiteness. A
        None is a completion the component could not score (an unusable judge reply), as TRL reads it."""
        prompts, completions, n = list(prompts), list(completions), len(completions)
        if len(prompts) != n:
            raise AlignlabError(f"{len(prompts)} prompts but {n} completions", fix="pass one prompt per completion")
        columns = decode_columns(columns)  # training carries some columns as JSON (common.encode_columns)
        out: dict[str, list[float | None]] = {}
        for c in self.parts:
            try:
                values = check_rewards(c.fn(prompts, completions, **columns), n, c.name, allow_none=True)
            except AlignlabError as err:
                where = err.where or c.where or None
                raise AlignlabError(f"reward component '{c.name}': {err.what}", where=where, fix=err.fix) from err
            except Exception as err:  # noqa: BLE001 - a user's function: name it, keep it to one line
                msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise AlignlabError(
                    f"reward component '{c.name}' ({c.source}) raised {type(err).__name__}: {msg}",
                    where=c.where or None,
                ) from err
            out[c.name] = values
        if self.diversity_weight:
            texts = [completion_text(x) for x in completions]
            out["diversity"] = similarity_penalty(texts, groups(prompts, self.group_size))
        return out

    def total(self, parts: dict[str, list[float | None]]) -> list[float | None]:
        """Weighted sum, capped, minus the diversity penalty, from ``components(...)``'s output.

        A None component is left out of its row's sum, as TRL's nansum does with several reward functions; a row
        whose components are all None is None (TRL leaves it out of the advantages)."""
        n = len(next(iter(parts.values()))) if parts else 0
        totals: list[float | None] = []
        for i in range(n):
            scored = [c.weight * parts[c.name][i] for c in self.parts if parts[c.name][i] is not None]
            if not scored:
                totals.append(None)
                continue
            t = sum(scored)
            if self.cap is not None:
                t = min(t, self.cap)
            if self.diversity_weight:
                t -= self.diversity_weight * parts["diversity"][i]
            totals.append(t)
        return totals

    def check_rows(self, rows: list[dict], places: list[str] | None = None) -> None:
        """Before training (or a loop's first sample): every built-in component that reads a data column
        (arithmetic, exact_match) finds a value in every row that it can use; else it would score 0 without a word.
        ``places``: each row's file:line, named instead of its count (a file's blank lines put them apart)."""
        def row(i: int) -> str:
            return f"the row at {places[i]}" if places else f"row {i + 1}"

        for part in self.parts:
            need = getattr(part.fn, "column", None)
            if not isinstance(need, str):
                continue
            missing = [i for i, r in enumerate(rows) if r.get(need) is None or str(r.get(need)).strip() == ""]
            if missing:
                have = ", ".join(sorted(rows[missing[0]])) or "none"
                raise AlignlabError(
                    f"reward component '{part.name}': {part.source} needs the column '{need}', which {len(missing)} of "
                    f"{len(rows)} rows lack or leave empty (the first: {row(missing[0])})", where=part.where or None,
                    fix=f"add '{need}' to each row or set args.column (columns of that row: {have})")
            problem = getattr(part.fn, "value_problem", None)
            for i, r in enumerate(rows if callable(problem) else []):
                if why := problem(r[need]):
                    raise AlignlabError(f"reward component '{part.name}': {part.source} cannot use {row(i)}: "
                                        f"its '{need}' {why}", where=part.where or None,
                                        fix=f"fix that row's '{need}', or point args.column at a column it can use")

    def __call__(self, prompts: list, completions: list, **columns) -> list[float | None]:
        parts = self.components(prompts, completions, **columns)
        log_metric = columns.get("log_metric")
        if callable(log_metric):  # TRL's GRPOTrainer passes this: per-component mean/std in the training logs
            for key, value in part_stats(parts).items():
                log_metric(key, value)
        return self.total(parts)


def part_stats(parts: dict[str, list[float | None]]) -> dict[str, float]:
    """``reward_parts/<name>/mean`` and ``/std`` of each component over the completions it scored (absent when it
    scored none: a 0.0 there read as a real score), and ``/unscored``, how many it could not score, in a batch where
    it left some out (a judge's unusable replies)."""
    stats: dict[str, float] = {}
    for name, values in parts.items():
        scored = [v for v in values if v is not None]
        if scored:
            mean = sum(scored) / len(scored)
            stats[f"reward_parts/{name}/mean"] = mean
            stats[f"reward_parts/{name}/std"] = math.sqrt(sum((v - mean) ** 2 for v in scored) / len(scored))
        if len(scored) < len(values):
            stats[f"reward_parts/{name}/unscored"] = float(len(values) - len(scored))
    return stats


# -- loading ----------------------------------------------------------------------------------------------


class _Lines:
    """file:line of any path of keys/indices in a YAML document (from the composed node tree)."""

    def __init__(self, path: str, text: str | None, keys: Callable[[tuple], tuple] | None = None):
        self.path, self.keys = path, keys  # keys: a spec's key path -> its path in the document (a nested spec)
        try:
            self.root = yaml.compose(text) if text else None
        except yaml.YAMLError:
            self.root = None

    def __call__(self, *keys) -> str:
        keys = self.keys(keys) if self.keys else keys
        node, line = self.root, None
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if getattr(k, "value", None) == key]
                if not match:
                    break
                line = match[0][0].start_mark.line + 1
                node = match[0][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        if line is None and node is not None:
            line = node.start_mark.line + 1
        return f"{self.path}:{line}" if line else self.path


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, what: str, where: str) -> float:
    if not _is_number(value):
        got = f"'{value}' (text)" if isinstance(value, str) else repr(value)
        raise AlignlabError(f"{what} must be a number, got {got}", where=where, fix="e.g. 0.5 (write 1.0e-3, not 1e-3)")
    return float(value)


def _arg_names(factory: Callable) -> list[str]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _check_args(factory: Callable, args: dict, label: str, where: str) -> None:
    """Unknown or missing constructor arguments of a built-in, reported before anything is built."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        unknown = sorted(set(args) - set(named))
        if unknown:
            valid = "valid args: " + (", ".join(named) or "none")
            raise AlignlabError(f"unknown arg '{unknown[0]}' for {label}", where=where, fix=valid)
    missing = [p.name for p in params if p.name in named and p.default is p.empty and p.name not in args]
    if missing:
        raise AlignlabError(f"{label} needs args: {', '.join(missing)}", where=where, fix="add them under args:")


def _async_error(ref: str, func_name: str, where: str) -> AlignlabError:
    return AlignlabError(f"{ref} is an async def; a reward function must be a plain def", where=where,
                         fix=f"write def {func_name}(prompts, completions, **columns) (run any awaits inside it with "
                             "asyncio.run)")


def _check_user_signature(fn: Callable, label: str, where: str) -> None:
    """A user's reward function must be a plain def taking (prompts, completions, **columns): TRL passes extra
    keywords, and the composed reward calls each component directly (a coroutine is no list of floats)."""
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn) or (
            not inspect.isfunction(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None))):
        raise _async_error(label, getattr(fn, "__name__", "fn"), where)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if len(positional) < 2 or not any(p.kind is p.VAR_KEYWORD for p in params):
        raise AlignlabError(
            f"{label} must be defined as def {getattr(fn, '__name__', 'fn')}(prompts, completions, **columns)",
            where=where,
            fix="TRL passes dataset columns and extras (completion_ids, trainer_state) as keywords",
        )


ALLOW_OUTSIDE_ENV = "ALIGNLAB_ALLOW_OUTSIDE_REWARDS"
_USER_MODULES: dict[str, tuple[int, Any]] = {}  # resolved path -> (mtime_ns, module): each file imported once


def _project_root(base_dir: Path) -> Path:
    from alignlab.config import find_project

    return find_project(base_dir) or base_dir.resolve()


def _user_file(ref: str, base_dir: Path, where: str, allow_outside: bool) -> Path:
    """The resolved path of ``file.py`` in ``file.py:function``: it exists and (by default) lies in the project."""
    file_part = ref.rpartition(":")[0]
    file = (base_dir / file_part).resolve()
    if not file.is_file():
        raise AlignlabError(
            f"reward file '{file_part}' not found (looked for {file})",
            where=where,
            fix="paths are relative to the spec file",
        )
    root = _project_root(base_dir)
    if not (allow_outside or os.environ.get(ALLOW_OUTSIDE_ENV) == "1") and not file.is_relative_to(root):
        raise AlignlabError(
            f"reward file '{file_part}' ({file}) is outside the project directory {root}; it would run as Python",
            where=where,
            fix=f"move it into the project, or allow it explicitly with {ALLOW_OUTSIDE_ENV}=1 "
                "(`alignlab train --allow-outside-rewards`)",
        )
    return file


def _read_user_fn(ref: str, file: Path, where: str) -> None:
    """Check ``file.py:function`` without running the file: it parses and defines the function at top level,
    taking (prompts, completions, **columns) when it is a plain ``def``."""
    file_part, _, func_name = ref.rpartition(":")
    source = read_text(file, "Python file")
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as err:
        raise AlignlabError(f"could not read {file_part}: SyntaxError: {err.msg} (line {err.lineno})", where=where,
                            fix=f"fix {file_part}") from err
    except ValueError as err:  # e.g. a null byte
        raise AlignlabError(f"could not read {file_part}: {type(err).__name__}: {err}", where=where) from err
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    bound = set(defs)
    for node in tree.body:  # other top-level bindings (fn = make(...), from x import fn): checked when imported
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                bound |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if func_name not in bound:
        functions = [n for n, d in defs.items() if not isinstance(d, ast.ClassDef)]
        raise AlignlabError(f"{file_part} has no function '{func_name}'", where=where,
                            fix="functions there: " + (", ".join(functions) or "none"))
    node = defs.get(func_name)
    if isinstance(node, ast.AsyncFunctionDef):
        raise _async_error(ref, func_name, where)
    if isinstance(node, ast.FunctionDef):
        a = node.args
        if len(a.posonlyargs) + len(a.args) + (a.vararg is not None) * 2 < 2 or a.kwarg is None:
            raise AlignlabError(
                f"{ref} must be defined as def {func_name}(prompts, completions, **columns)",
                where=where,
                fix="TRL passes dataset columns and extras (completion_ids, trainer_state) as keywords",
            )


def _load_user_fn(ref: str, file: Path, where: str) -> Callable:
    """``file.py:function`` -> the function, importing the file by path (once per process and file version)."""
    file_part, _, func_name = ref.rpartition(":")
    mtime = file.stat().st_mtime_ns
    cached = _USER_MODULES.get(str(file))
    if cached is not None and cached[0] == mtime:
        return _pick_fn(cached[1], file_part, func_name, where)
    module_name = f"alignlab_user_reward_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise AlignlabError(f"cannot import '{file_part}' as Python", where=where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    folder = str(file.parent)  # its sibling modules import as they do when the file runs on its own
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as err:  # noqa: BLE001 - report any import failure (SyntaxError, SystemExit...) in one line
        sys.modules.pop(module_name, None)
        if isinstance(err, KeyboardInterrupt):
            raise
        if isinstance(err, SyntaxError):
            detail = f"{err.msg} (line {err.lineno})"
        else:
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise AlignlabError(
            f"could not import {file_part}: {type(err).__name__}: {detail}", where=where, fix=f"fix {file_part}"
        ) from err
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    _USER_MODULES[str(file)] = (mtime, module)
    return _pick_fn(module, file_part, func_name, where)


def _pick_fn(module, file_part: str, func_name: str, where: str) -> Callable:
    module_name = module.__name__
    fn = getattr(module, func_name, None)
    if fn is None:
        defined = [n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", None) == module_name]
        raise AlignlabError(
            f"{file_part} has no function '{func_name}'",
            where=where,
            fix="functions there: " + (", ".join(defined) or "none"),
        )
    if not callable(fn):
        raise AlignlabError(f"'{func_name}' in {file_part} is not a function", where=where)
    return fn


def _valid_fns() -> str:
    return "valid fns: " + ", ".join(REGISTRY) + ", or file.py:function"


def _check_keys(mapping: dict, allowed: tuple[str, ...], what: str, at: _Lines, *path) -> None:
    for key in mapping:
        if key not in allowed:
            raise AlignlabError(
                f"unknown key '{key}'{what}", where=at(*path, key), fix="valid keys: " + ", ".join(allowed)
            )


@dataclass
class _Plan:
    """A checked component, not yet built."""

    name: str
    ref: str
    weight: float
    where: str
    target: Callable | Path  # the user's file (imported only when built), or the built-in's factory
    args: dict
    is_file: bool
    fn_at: str = ""  # file:line of its fn
    args_at: str = ""  # file:line of its args


def _plan(i: int, entry: Any, base_dir: Path, at: _Lines, names: set[str], allow_outside: bool = False) -> _Plan:
    """Check one ``components`` entry and resolve its fn (reads a user file without running it; builds nothing)."""
    where = at("components", i)
    if not isinstance(entry, dict):
        raise AlignlabError(f"component {i + 1} must be a mapping with fn and weight", where=where)
    _check_keys(entry, COMPONENT_KEYS, f" in component {i + 1}", at, "components", i)
    ref = entry.get("fn")
    if not isinstance(ref, str) or not ref:
        raise AlignlabError(f"component {i + 1} has no fn", where=where, fix=_valid_fns())
    weight_at = at("components", i, "weight")
    weight = _number(entry.get("weight", 1.0), f"weight of component {i + 1} ({ref})", weight_at)
    args = entry.get("args") or {}
    if not isinstance(args, dict):
        raise AlignlabError(f"args of component {i + 1} must be a mapping", where=at("components", i, "args"))
    is_file = ":" in ref and ref.rpartition(":")[0].endswith(".py")
    name = entry.get("name") or (ref.rpartition(":")[2] if is_file else ref)
    if not isinstance(name, str) or name in names or name in RESERVED:
        why = "must be text" if not isinstance(name, str) else "is used twice" if name in names else "is reserved"
        raise AlignlabError(
            f"component name {name!r} {why}",
            where=at("components", i, "name") if "name" in entry else where,
            fix="give each component a unique name (not " + " or ".join(RESERVED) + ")",
        )
    names.add(name)
    fn_at = at("components", i, "fn")
    if is_file:
        file = _user_file(ref, base_dir, fn_at, allow_outside)
        _read_user_fn(ref, file, fn_at)
        return _Plan(name, ref, weight, where, file, args, True, fn_at)
    if ref not in REGISTRY:
        raise AlignlabError(f"unknown reward fn '{ref}'", where=fn_at, fix=_valid_fns())
    builtin = REGISTRY[ref]
    args = {
        k: str(base_dir / v) if k in builtin.path_args and not Path(str(v)).is_absolute() else v
        for k, v in args.items()
    }
    args_at = at("components", i, "args") if entry.get("args") else where
    _check_args(builtin.factory, args, ref, args_at)
    return _Plan(name, ref, weight, where, builtin.factory, args, False, args_at=args_at)


def _build(plan: _Plan) -> Component:
    if plan.is_file:
        fn = _load_user_fn(plan.ref, plan.target, plan.fn_at)
        _check_user_signature(fn, plan.ref, plan.fn_at)
        fn = functools.partial(fn, **plan.args) if plan.args else fn
        return Component(plan.name, fn, plan.weight, plan.ref, plan.where)
    where = plan.args_at or plan.where
    try:
        fn = plan.target(**plan.args)
    except AlignlabError as err:
        raise AlignlabError(f"component '{plan.name}' ({plan.ref}): {err.what}", where=where, fix=err.fix) from err
    except Exception as err:  # noqa: BLE001 - an arg of the wrong type can fail anywhere in a constructor
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AlignlabError(f"component '{plan.name}' ({plan.ref}): bad args: {msg}", where=where,
                            fix="see the valid args: " + ", ".join(_arg_names(plan.target))) from err
    return Component(plan.name, fn, plan.weight, plan.ref, plan.where)


class _NotImported:
    """Stands for a user's function in a spec that was only checked (``check_only``): the file was read, not run."""

    def __init__(self, ref: str):
        self.ref = ref

    def __call__(self, *args, **kwargs):
        raise AlignlabError(f"reward '{self.ref}' was only checked, not imported", fix="load the spec without check_only")


def build_spec(
    data: Any,
    base_dir: str | Path = ".",
    source: str = "<spec>",
    text: str | None = None,
    check_only: bool = False,
    allow_outside: bool = False,
    keys: Callable[[tuple], tuple] | None = None,
) -> ComposedReward:
    """Validate a parsed spec (every check first), then build its components.

    ``check_only``: validate and build the built-ins, but do not import users' files (they are read and
    parsed only); ``allow_outside``: accept user files outside the project directory; ``keys``: where a key path
    of ``data`` sits in ``text`` when ``data`` is not the whole document (file:line of its errors).
    """
    base_dir = Path(base_dir)
    at = _Lines(source, text, keys)
    if not isinstance(data, dict):
        raise AlignlabError("a reward spec must be a mapping with a 'components' list", where=at())
    _check_keys(data, TOP_KEYS, "", at)
    comps = data.get("components")
    if not isinstance(comps, list) or not comps:
        raise AlignlabError(
            "'components' must be a non-empty list", where=at("components"), fix="e.g. - {fn: persona_heuristic}"
        )
    cap = data.get("cap")
    if cap is not None:
        cap = _number(cap, "cap", at("cap"))
    diversity_weight, group_size = 0.0, None
    div = data.get("diversity")
    if div is not None:
        if not isinstance(div, dict):
            raise AlignlabError("'diversity' must be a mapping like {weight: 0.1}", where=at("diversity"))
        _check_keys(div, DIVERSITY_KEYS, " in diversity", at, "diversity")
        diversity_weight = _number(div.get("weight"), "diversity.weight", at("diversity", "weight"))
        if diversity_weight < 0:  # the penalty is subtracted: a negative weight would pay answers for being alike
            raise AlignlabError(f"diversity.weight must be 0 or more, got {diversity_weight:g} (it is subtracted "
                                "already)", where=at("diversity", "weight"), fix="give its size, e.g. weight: 0.1")
        group_size = div.get("group_size")
        bad = isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1
        if group_size is not None and bad:
            raise AlignlabError(
                f"diversity.group_size must be a positive integer, got {group_size!r}",
                where=at("diversity", "group_size"),
            )
    names: set[str] = set()
    plans = [_plan(i, entry, base_dir, at, names, allow_outside) for i, entry in enumerate(comps)]  # nothing built
    parts = [
        Component(p.name, _NotImported(p.ref), p.weight, p.ref, p.where) if check_only and p.is_file else _build(p)
        for p in plans
    ]
    return ComposedReward(parts, cap, diversity_weight, group_size, source)


def load_spec(path: str | Path, check_only: bool = False, allow_outside: bool = False) -> ComposedReward:
    """Read, validate and build a reward spec YAML file (see ``build_spec`` for the two flags)."""
    path = Path(path)
    try:
        text = read_text(path, "reward spec")  # a directory, a missing file or one not in UTF-8: one line
    except AlignlabError as err:
        if path.exists():
            raise
        raise AlignlabError(err.what, where=err.where, fix=f"{err.fix}; {MISSING_SPEC_FIX}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise AlignlabError(f"malformed YAML ({getattr(err, 'problem', None) or err})", where=where) from err
    return build_spec(data, base_dir=path.parent, source=str(path), text=text, check_only=check_only,
                      allow_outside=allow_outside)


DEFAULT_SPEC = """\
# Reward spec: total = min(cap, sum of weight * component) - diversity.weight * similarity to the group.
components:
  - {name: heuristic, fn: persona_heuristic, weight: 0.8}
  - {name: length, fn: length_penalty, weight: -0.2, args: {target: 60}}
cap: 1.0
diversity: {weight: 0.1}
"""


# a missing spec is most often the starter rewards.yaml of a project made before projects got one
MISSING_SPEC_FIX = ("without --rewards, `alignlab train grpo/rloo/ppo` uses the same default reward that a new "
                    "project's rewards.yaml holds")


def default_reward() -> ComposedReward:
    """The reward used when a project names no spec: persona heuristics, length penalty, cap, diversity."""
    return build_spec(yaml.safe_load(DEFAULT_SPEC), source="<default rewards>", text=DEFAULT_SPEC)
