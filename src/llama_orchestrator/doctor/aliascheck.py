"""Aliases that pool what is not one model (issue 19, item 10).

The gateway pools every instance that answers to a name: its own name or an alias. That
is how replicas of one model share a name. An alias that is another instance's name, or
an alias two instances share, pools them whatever their models: requests for ``gemma``
were answered by the tiny model. ``config validate`` refuses a pool whose members serve
different model files (naming the file, the alias, the other instance and the fix);
``config lint`` shows the same as its ``aliases`` row. Replicas of one model file pool
as before. Remote instances are left out: their model is not a file here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig, Problem, short_value
from llama_orchestrator.doctor.verdict import Verdict

FIELD = "gateway.aliases"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is missing (validate names that apart): compare the paths
        return a.resolve() == b.resolve()


def alias_problems(cfg: LoadedConfig, home_configs: Sequence[LoadedConfig]) -> list[Problem]:
    """Each alias of ``cfg`` that pools it with an instance serving another model file."""
    if cfg.remote is not None:
        return []
    file = str(cfg.path)
    others = [o for o in home_configs if o.name != cfg.name and o.remote is None]
    problems = []
    for alias in cfg.config.gateway.aliases:
        for other in others:
            if _same_file(cfg.model_path, other.model_path):
                continue  # replicas of one model: a pool, as meant
            if alias == other.name:
                why = (
                    f"is the name of instance {other.name!r} ({other.path}), which serves "
                    f"another model file ({other.model_path}): requests for {alias!r} would "
                    f"be answered by either model; rename the alias (or instance "
                    f"{other.name!r})"
                )
            elif alias in other.config.gateway.aliases:
                why = (
                    f"is also an alias of instance {other.name!r} ({other.path}), which "
                    f"serves another model file ({other.model_path}): a pool's instances "
                    "must serve one model; give each model its own alias"
                )
            else:
                continue
            problems.append(Problem(file, FIELD, why, short_value(alias)))
            break  # one line per alias: the first instance it wrongly pools with
    return problems


def alias_verdict(cfg: LoadedConfig, home_configs: Sequence[LoadedConfig]) -> Verdict:
    """Lint's ``aliases`` row."""
    problems = alias_problems(cfg, home_configs)
    if problems:
        return "error", "; ".join(f"{p.value} {p.message}" for p in problems)
    aliases = cfg.config.gateway.aliases
    if not aliases:
        return "ok", "no aliases"
    return "ok", f"{', '.join(aliases)}: no pool with another model file"
