"""The search space: the choices of the compression passes' typed options a trial picks from, and the pipeline spec
a choice makes (`effc compile --passes SPEC` reproduces a point exactly).

Dimensions (each a list of choices; a TOML recipe's `[search]` table restricts or extends them):
  prune.ratio       channel ratio (0: no pruning), with least-squares reconstruction; prune.scope uniform (every
                    group that ratio) or sensitivity (per-group ratios from the measured sensitivity, same MACs)
  cluster.k         codebook size (0: no clustering), cluster.scope tensor|channel|auto, cluster.assign
                    nearest|gptq (how weights pick their entry), cluster.small_k the k of a second cluster pass
                    over the smaller weights the first leaves float (SMALL_MIN_SIZE values or more; 0: none)
  int8.enabled      int8 QDQ on or off, int8.calibrator its range method, int8.accuracy_budget the top-1 agreement
                    loss its sensitivity report may spend before layers fall back to float (0: none fall back)
  precision         fp32 or fp16 (only where the target computes in float16; never together with int8)
The order is the one the passes declare: prune, then cluster (which snaps its codebooks to the int8 grid when int8
follows), then int8 or fp16; strip-names last when the objectives include size.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from effc.errors import EffcError

SMALL_MIN_SIZE = 128  # values: the second cluster pass's min_size (the first keeps cluster's default, 1024)

DEFAULTS: dict[str, list] = {
    "prune.ratio": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    "prune.scope": ["uniform", "sensitivity"],
    "cluster.k": [0, 256, 64, 16, 4],  # 8-, 4- and 2-bit indices
    "cluster.scope": ["tensor", "channel", "auto"],
    "cluster.assign": ["nearest", "gptq"],
    "cluster.small_k": [0, 16, 64],
    "int8.enabled": [False, True],
    "int8.calibrator": ["percentile", "entropy", "minmax"],
    "int8.accuracy_budget": [0.0, 0.01],
    "precision": ["fp32"],
}


@dataclass
class SearchSpace:
    dimensions: dict[str, list] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULTS.items()})
    strip_names: bool = False

    @classmethod
    def for_target(cls, target, *, strip_names: bool = False) -> "SearchSpace":
        space = cls(strip_names=strip_names)
        if "float16" in target.isa.float_types:
            space.dimensions["precision"] = ["fp32", "fp16"]
        return space

    def restricted(self, table: dict) -> "SearchSpace":
        """This space with the dimensions a recipe's `[search]` table names replaced by its lists."""
        flat = {}
        for group, values in table.items():  # [search.prune] ratio = [...], or precision = [...] at the top
            if isinstance(values, dict):
                flat.update({f"{group}.{key}": value for key, value in values.items()})
            else:
                flat[group] = values
        dimensions = dict(self.dimensions)
        for name, choices in flat.items():
            if name not in DEFAULTS:
                raise EffcError(f"search recipe: unknown dimension {name!r}; known: {', '.join(DEFAULTS)}")
            choices = choices if isinstance(choices, list) else [choices]
            if not choices:
                raise EffcError(f"search recipe: {name} has no choices")
            dimensions[name] = choices
        return SearchSpace(dimensions, self.strip_names)

    def restricted_by_recipe(self, path: str | Path) -> "SearchSpace":
        try:
            table = tomllib.loads(Path(path).read_text()).get("search")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise EffcError(f"{path}: not a readable TOML recipe ({exc})") from None
        if not isinstance(table, dict):
            raise EffcError(f"{path}: no [search] table")
        return self.restricted(table)

    def probes(self) -> list[dict]:
        """Each pass alone at a middle setting (as far as the space has it): the first trials of a new study, so
        the sampler starts from what single passes give and looks for combinations that beat them."""
        d = self.dimensions

        def middle(name):
            values = [v for v in d[name] if v]
            return values[len(values) // 2] if values else d[name][0]

        probes = []
        if any(d["prune.ratio"]):
            probes.append({"prune.ratio": middle("prune.ratio"), "cluster.k": 0, "int8.enabled": False})
        if any(d["cluster.k"]):
            probes.append({"prune.ratio": 0.0, "cluster.k": middle("cluster.k"), "cluster.scope": d["cluster.scope"][0],
                           "int8.enabled": False})
        if True in d["int8.enabled"]:
            probes.append({"prune.ratio": 0.0, "cluster.k": 0, "int8.enabled": True,
                           "int8.calibrator": d["int8.calibrator"][0]})
        # a probe may only use choices the (restricted) space has
        return [p for p in probes if all(v in d[k] for k, v in p.items())]

    def suggest(self, trial) -> dict:
        """A configuration from an Optuna trial; conditional dimensions are only asked where they matter."""
        d = self.dimensions
        config = {"prune.ratio": trial.suggest_categorical("prune.ratio", d["prune.ratio"])}
        if config["prune.ratio"]:
            config["prune.scope"] = trial.suggest_categorical("prune.scope", d["prune.scope"])
        config["cluster.k"] = trial.suggest_categorical("cluster.k", d["cluster.k"])
        if config["cluster.k"]:
            config["cluster.scope"] = trial.suggest_categorical("cluster.scope", d["cluster.scope"])
            config["cluster.assign"] = trial.suggest_categorical("cluster.assign", d["cluster.assign"])
            config["cluster.small_k"] = trial.suggest_categorical("cluster.small_k", d["cluster.small_k"])
        config["int8.enabled"] = trial.suggest_categorical("int8.enabled", d["int8.enabled"])
        if config["int8.enabled"]:
            config["int8.calibrator"] = trial.suggest_categorical("int8.calibrator", d["int8.calibrator"])
            config["int8.accuracy_budget"] = trial.suggest_categorical("int8.accuracy_budget", d["int8.accuracy_budget"])
        elif len(d["precision"]) > 1:
            config["precision"] = trial.suggest_categorical("precision", d["precision"])
        return config

    def spec(self, config: dict) -> str:
        steps = ["default"]
        if config.get("prune.ratio"):
            scope = config.get("prune.scope", "uniform")
            steps.append(f"prune(ratio={config['prune.ratio']:g},scope={scope})")
        if config.get("cluster.k"):
            # spelled out, so a front's spec keeps its meaning if cluster's default assignment changes again
            assign = config.get("cluster.assign", "auto")
            steps.append(f"cluster(k={config['cluster.k']},scope={config.get('cluster.scope', 'tensor')},assign={assign})")
            if config.get("cluster.small_k"):
                steps.append(f"cluster(k={config['cluster.small_k']},min_size={SMALL_MIN_SIZE},assign={assign})")
        if config.get("int8.enabled"):
            budget = config.get("int8.accuracy_budget") or 0
            steps.append(f"int8(calibrator={config.get('int8.calibrator', 'percentile')}"
                         + (f",accuracy_budget={budget:g})" if budget else ")"))
        elif config.get("precision") == "fp16":
            steps.append("fp16")
        if self.strip_names:
            steps.append("strip-names")
        return ",".join(steps)
