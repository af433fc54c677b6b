"""Automated compression search (`effc search`, `effc.search`): an accuracy-budgeted Pareto front over prune x
cluster x int8 x precision, each point compiled for the target and measured there.

budget.py parses budgets, quality.py measures quality on evaluation data, space.py is the search space and the
spec each point's pipeline is, trial.py measures a point, front.py is the result, study.py drives Optuna."""

from effc.autosearch.budget import Budget, parse_budget
from effc.autosearch.front import Front
from effc.autosearch.space import SearchSpace
from effc.autosearch.study import search
from effc.autosearch.trial import Point

__all__ = ["Budget", "parse_budget", "Front", "SearchSpace", "search", "Point"]
