"""The method registry: one record per training method; every list of methods in alignlab derives from it.

A record says what a method trains on (the dataset kind), where its settings live in alignlab.yaml, which
module is its recipe, which config key is its beta, whether it needs a frozen reference model, whether it
generates its own completions (online), what it produces, and which ``alignlab export --format`` turns
ratings into its data. The CLI, the data checks, the planner, the model card and the loop ask this module;
none keeps its own list.

A recipe module implements :class:`TrainerRecipe` (a TRL trainer from a run context) or :class:`LoopRecipe`
(our own loop, PPO); the record's ``own_loop`` says which, so the engine calls it without probing.

Bottom layer: imports nothing from training, evaluation, serving, feedback or the CLI.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from alignlab.errors import AlignlabError

# method names: written here only; elsewhere use these constants or the records
SFT, DPO, IPO, SIMPO, ORPO, KTO, RM, GRPO, RLOO, PPO = "sft", "dpo", "ipo", "simpo", "orpo", "kto", "rm", "grpo", "rloo", "ppo"

# what a run leaves in runs/<id>/adapter (the model's task)
CAUSAL = "causal"  # an adapter (or full weights) on the causal LM: a chat model
SEQ_CLS = "seq-cls"  # a sequence classifier scoring (prompt, answer): a reward model


class Recipe(Protocol):
    """What every recipe module provides (``ctx``: :class:`alignlab.train.engine.RunContext`)."""

    def check(self, ctx: Any) -> None:
        """Recipe-specific checks (reward specs, vLLM) before any model loads; raise AlignlabError."""


class TrainerRecipe(Recipe, Protocol):
    """A thin recipe over a TRL trainer: the engine runs, resumes and saves it."""

    def build_trainer(self, ctx: Any) -> Any: ...


class LoopRecipe(Recipe, Protocol):
    """Our own training loop under the same run-directory contract: returns (model, steps, final metrics)."""

    def train_loop(self, ctx: Any, resume: bool = False) -> tuple[Any, int, dict]: ...


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # dataset kind it trains on (alignlab.data.formats.KINDS)
    sections: tuple[str, ...]  # alignlab.yaml sections with its settings; the first is its own
    recipe: str  # module implementing TrainerRecipe, or LoopRecipe when own_loop
    beta: str | None  # dotted config key of its beta (what `train --beta` sets); None: it has none
    reference: bool  # needs a frozen reference model (with LoRA: the adapter switched off)
    online: bool = False  # generates its own completions while training
    own_loop: bool = False  # our own loop (LoopRecipe.train_loop) instead of a TRL trainer
    task: str = CAUSAL  # what it produces: CAUSAL (a chat model's adapter) or SEQ_CLS (a reward model)
    feedback: str | None = None  # `alignlab export --format` that turns ratings into its data
    loop: bool = False  # `alignlab loop --method` trains with it
    learning_rate: float = 1e-4  # the default train.learning_rate for this method (README: "Method defaults")

    @property
    def section(self) -> str:
        return self.sections[0]

    def beta_value(self, cfg: Any) -> float | None:
        """This method's beta in a project config (None for a method without one)."""
        if not self.beta:
            return None
        section, key = self.beta.split(".")
        return getattr(getattr(cfg, section), key)

    @property
    def reference_free(self) -> bool:
        return not self.reference

    @property
    def policy_on_pairs(self) -> bool:
        """DPO, IPO, SimPO, ORPO: a chat model trained on chosen/rejected pairs (the reward model scores them)."""
        return self.kind == "preference" and self.task == CAUSAL

    def load_recipe(self) -> TrainerRecipe | LoopRecipe:
        return importlib.import_module(self.recipe)  # type: ignore[return-value]


_PREF = "alignlab.train.preference"
# DPO, IPO and SimPO default to this rate: at 1e-4 for one epoch over the bundled 600 pairs IPO and SimPO wrote
# gibberish and DPO rude non-answers (README: "Method defaults"); 5e-5 with the chosen-answer NLL term (on by
# default) keeps sentences whole, though correctness still falls
PREF_LR = 5e-5
_ONLINE = "alignlab.train.online"
REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method(SFT, "sft", (SFT,), "alignlab.train.sft", None, reference=False, feedback=SFT),
    Method(DPO, "preference", (DPO,), _PREF, "dpo.beta", reference=True, feedback=DPO, loop=True,
           learning_rate=PREF_LR),
    Method(IPO, "preference", (IPO,), _PREF, "ipo.beta", reference=True, feedback=DPO, learning_rate=PREF_LR),
    Method(SIMPO, "preference", (SIMPO,), _PREF, "simpo.beta", reference=False, feedback=DPO,
           learning_rate=PREF_LR),
    Method(ORPO, "preference", (ORPO,), _PREF, "orpo.beta", reference=False, feedback=DPO),
    Method(KTO, "unpaired", (KTO,), "alignlab.train.kto", "kto.beta", reference=True, feedback=KTO, loop=True),
    Method(RM, "preference", (RM,), "alignlab.train.rm", None, reference=False, task=SEQ_CLS, feedback=DPO),
    Method(GRPO, "prompts", ("online",), _ONLINE, "online.beta", reference=True, online=True),
    Method(RLOO, "prompts", ("online",), _ONLINE, "online.beta", reference=True, online=True),
    Method(PPO, "prompts", ("online", PPO), "alignlab.train.ppo", "online.beta", reference=True, online=True,
           own_loop=True),
)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Method:
    """The record of ``name``; an unknown name is one clear error listing the known ones."""
    if name not in REGISTRY:
        raise AlignlabError(f"unknown method '{name}'", fix="one of: " + ", ".join(NAMES))
    return REGISTRY[name]


def names(**where: Any) -> tuple[str, ...]:
    """Method names whose record matches every ``field=value`` given, in registry order."""
    return tuple(m.name for m in REGISTRY.values() if all(getattr(m, k) == v for k, v in where.items()))


def is_online(name: str) -> bool:
    """True for GRPO, RLOO, PPO; False for the others and for unknown names (those fail later, with context)."""
    return name in REGISTRY and REGISTRY[name].online


def help_list(items: tuple[str, ...] = NAMES) -> str:
    """'a, b or c' for --help texts."""
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)
