"""`effc.search`: an Optuna study over the search space, each trial measured by the Evaluator, the budget as a
constraint; the study lives in an RDB storage (SQLite in the output folder by default), so several workers with one
`storage` and `study` share it, `resume` continues it, and Ctrl-C keeps the finished trials."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from effc.autosearch.budget import parse_budget
from effc.autosearch.front import Front, pareto
from effc.autosearch.space import SearchSpace
from effc.autosearch.trial import OBJECTIVES, Evaluator, Point, finite
from effc.calib import CalibrationData
from effc.errors import EffcError

STUDY = "effc-search"
DUPLICATE_LIMIT = 50  # consecutive repeats of measured configurations: the space is used up


def _sqlite_lock(url: str):
    """An exclusive lock on a file beside a SQLite study: SQLite has no SELECT ... FOR UPDATE, so without it two
    workers can both claim the same enqueued trial (both run it, and the second `tell` fails)."""
    lock = open(Path(url.removeprefix("sqlite:///")).with_suffix(".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _storage(url: str | None, out: Path):
    import optuna

    class LockedSQLiteStorage(optuna.storages.RDBStorage):
        """Claiming a waiting trial (WAITING -> RUNNING) is a check-then-set: done under the file lock."""

        def set_trial_state_values(self, trial_id, state, values=None):
            if state != optuna.trial.TrialState.RUNNING:
                return super().set_trial_state_values(trial_id, state, values)
            lock = _sqlite_lock(self.url)
            try:
                return super().set_trial_state_values(trial_id, state, values)
            finally:
                lock.close()

    url = url or f"sqlite:///{(out / 'study.db').resolve()}"
    sqlite = url.startswith("sqlite:///")
    lock = _sqlite_lock(url) if sqlite else None  # workers starting together would both create a new file's schema
    try:
        if sqlite:
            return LockedSQLiteStorage(url), url
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}), url
    except Exception as exc:  # SQLAlchemy raises many types for unreachable or malformed URLs
        raise EffcError(f"--storage {url}: cannot open it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    finally:
        if lock is not None:
            lock.close()


def search(model: str | os.PathLike, *, calib: str | os.PathLike | None, eval: str | os.PathLike, out: str | os.PathLike,
           metric: str = "top1", budget: str = "accuracy_drop<=0.01", objectives: Sequence[str] = ("size",),
           target: str = "ort", cpu: str | None = None, input_shapes: Mapping[str, Sequence[int]] | None = None,
           trials: int | None = None, seconds: float | None = None, storage: str | None = None, study: str = STUDY,
           resume: bool = False, seed: int = 0, recipe: str | os.PathLike | None = None,
           progress: Callable[[int, int | None, str], None] | None = None) -> Front:
    """Search prune x cluster x int8 x precision for the points of `model` that are Pareto-optimal in `objectives`
    (latency on the target, size, MACs; all minimized) within `budget` of `metric` on `eval` data. Returns the Front
    and writes front.json, front.png and each front point's ONNX and artifact under `out`.

    trials: completed trials the study should have (all workers together); seconds: this worker's time budget.
    EffcError for a bad budget, metric, objective, storage, or an existing study without `resume`."""
    import optuna

    from effc.targets import get_target

    parsed = parse_budget(budget)
    objectives = tuple(objectives)
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise EffcError(f"--objective {unknown[0] if unknown else '(none)'}: expected {', '.join(OBJECTIVES)}")
    if trials is None and seconds is None:
        raise EffcError("give a search budget: --trials N or --time DURATION")
    if trials is not None and trials < 1:
        raise EffcError(f"--trials {trials}: must be at least 1")
    record = get_target(target, cpu)
    space = SearchSpace.for_target(record, strip_names="size" in objectives)
    if recipe:
        space = space.restricted_by_recipe(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rdb, url = _storage(storage, out)
    if storage is None and study in optuna.study.get_all_study_names(storage=rdb) and not resume:
        # an explicit --storage is how workers share a study: they join it; the default one is this folder's own
        raise EffcError(f"{out} already holds a search (study {study!r}): give --resume to continue it, or another -o")
    calibration = CalibrationData.load(calib) if calib else None
    started = time.monotonic()
    evaluator = Evaluator(str(model), input_shapes, record, calibration, metric, eval, parsed, objectives,
                          out / "trials", seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # few random start-up trials: the probes below already spread the first ones over the space
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=max(2, min(10, (trials or 40) // 4)))
    optuna_study = optuna.create_study(study_name=study, storage=rdb, directions=["minimize"] * len(objectives),
                                       sampler=sampler, load_if_exists=True)
    _check_same_question(optuna_study, str(model), record.name, str(parsed), objectives, metric)
    lock = _sqlite_lock(url) if url.startswith("sqlite:///") else None  # one worker enqueues the probes
    try:
        if not optuna_study.get_trials(deepcopy=False):
            for probe in space.probes():
                optuna_study.enqueue_trial(probe, skip_if_exists=True)
    finally:
        if lock is not None:
            lock.close()
    duplicates = [0]

    def objective(trial) -> list[float]:
        done, ahead = _done_and_ahead(optuna_study, trial.number)
        if trials is not None and len(done) + len(ahead) >= trials:
            optuna_study.stop()
            raise optuna.TrialPruned("the study has its trials")
        config = space.suggest(trial)
        spec = space.spec(config)
        if any(t.user_attrs.get("spec") == spec for t in [*done, *ahead]):
            duplicates[0] += 1
            if duplicates[0] >= DUPLICATE_LIMIT:
                optuna_study.stop()
            raise optuna.TrialPruned(f"{spec} was measured already")
        duplicates[0] = 0
        trial.set_user_attr("spec", spec)
        point = evaluator.evaluate(spec, config, trial.number)
        trial.set_constraint("accuracy_budget", parsed.violation(point.quality, evaluator.baseline.quality))
        trial.set_user_attr("point", point.to_json())
        if progress is not None:
            feasible = [Point(**t.user_attrs["point"]) for t in done if "point" in t.user_attrs] + [point]
            feasible = [p for p in feasible if p.feasible and not p.estimated]
            best = min(feasible, key=lambda p: finite(p.objective(objectives[0])), default=None)
            progress(len(done) + 1, trials, f"best {_describe(best, objectives)}" if best else "no point within budget yet")
        return [finite(point.objective(o)) for o in objectives]

    interrupted = False
    try:
        optuna_study.optimize(objective, timeout=seconds, catch=(), gc_after_trial=False)
    except KeyboardInterrupt:
        interrupted = True
    front = _front(optuna_study, evaluator, str(model), record.name, str(parsed), metric, objectives, url, study)
    front.seconds = time.monotonic() - started
    _keep_files_of(front, evaluator)
    front.save(out)
    if interrupted:
        raise KeyboardInterrupt
    return front


def _done_and_ahead(study, number: int) -> tuple[list, list]:
    """The completed trials, and the running ones numbered below `number`: workers sharing the study count a trial
    that started before this one as done (the lower number wins). One read for both lists: with two, a trial that
    finishes between them is in neither, and one trial too many runs."""
    import optuna

    snapshot = study.get_trials(deepcopy=False)
    done = [t for t in snapshot if t.state == optuna.trial.TrialState.COMPLETE]
    ahead = [t for t in snapshot if t.state == optuna.trial.TrialState.RUNNING and t.number < number]
    return done, ahead


def _completed(study) -> list:
    import optuna

    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def _check_same_question(study, model: str, target: str, budget: str, objectives, metric: str) -> None:
    """A resumed or shared study must ask the same question: the same model, target, budget, objectives, metric."""
    question = {"model": os.path.abspath(model), "target": target, "budget": budget, "objectives": list(objectives),
                "metric": metric}
    asked = study.user_attrs.get("question")
    if asked is None:
        study.set_user_attr("question", question)
    elif asked != question:
        changed = ", ".join(k for k in question if asked.get(k) != question[k])
        raise EffcError(f"study {study.study_name!r} searched a different question ({changed} differ): use another --study")


def _describe(point: Point, objectives) -> str:
    values = ", ".join(f"{o} {point.objective(o):.4g}" for o in objectives)
    return f"{values}, quality {point.quality:.4f}: {point.spec}"


def _front(study, evaluator: Evaluator, model: str, target: str, budget: str, metric: str, objectives, url: str,
           name: str) -> Front:
    points = [Point(**t.user_attrs["point"]) for t in _completed(study) if "point" in t.user_attrs]
    return Front(model, target, budget, metric, tuple(objectives), evaluator.baseline, pareto(points, tuple(objectives)),
                 points, study=name, storage=url)


def _keep_files_of(front: Front, evaluator: Evaluator) -> None:
    """Front points get an artifact for the target (compiled now where none was); other trials' files go."""
    keep = {p.trial for p in front.points}
    for point in front.trials:
        if point.trial not in keep and point.onnx and Path(point.onnx).exists():
            evaluator.discard(point)
    for point in front.points:
        if point.onnx and not point.artifact and Path(point.onnx).exists():
            import effc

            out = Path(point.onnx).parent / f"model.{evaluator.target.name}.effc"
            if not out.exists():
                effc.compile(evaluator.model_path, evaluator.target, pipeline=point.spec, ctx=evaluator.context(),
                             input_shapes=evaluator.input_shapes, out=out)
            point.artifact = str(out)


logging.getLogger("optuna").setLevel(logging.WARNING)
