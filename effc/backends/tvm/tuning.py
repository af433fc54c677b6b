"""MetaSchedule tuning into a persistent database that `effc compile` applies (`--db`, `--tune`).

The tasks are the fused PrimFuncs that the target's lowering makes (`task_passes`; for an int8 model after its integer
rewrite), so their structural hashes are what `MetaScheduleApplyDatabase` looks up during compile. Per run:
1. Extract the tasks; skip those the database already covers (a workload is tuned once, ever) and those with fewer
   than `min_flops` FLOPs (data movement, tiny kernels); order the rest by expected gain, FLOPs x calls.
2. Seed: build each task's default schedule (the lowering's `default_schedule`, or the unscheduled function
   where no rule applies), time it with the same runner as the search, and commit it to the database as a tuning
   record. Compile applies the database's best record per workload, so a tuned schedule replaces the default one
   only where it measured faster: tuning never makes a kernel slower. The measured default time x calls then
   orders the tasks (what tuning can win back; FLOPs x calls where a seed failed).
3. Search with MetaSchedule, round-robin over the tasks in that order, until the trial budget is spent or the time
   budget runs out (checked after every measured batch, so a run ends at most one batch late).
The work happens in a copy of the database folder that replaces it only on success.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from effc.errors import EffcError

# Tasks below this many FLOPs are not worth a builder round (about 20 s here) and cost nearly nothing at run time.
MIN_FLOPS = 100_000
FAILED_US = 1e9  # MetaSchedule's run time of a candidate that failed is 1e10 s
BUDGET_GRACE_S = 30  # a time budget may be overrun by this much rather than leave a batch unmeasured
STATE_FILE = "effc_tuning.json"  # beside MetaSchedule's database_workload.json / database_tuning_record.json


def default_db_dir(target) -> Path:
    """~/.cache/effc/tuning/<target name>[-<cpu>]: one database per target and CPU model."""
    name = target.name + (f"-{target.cpu}" if target.cpu else "")
    return Path.home() / ".cache" / "effc" / "tuning" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def parse_duration(text: str) -> float:
    """Seconds of "90", "90s", "20m", "1h", "1h30m"; EffcError otherwise."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise EffcError(f"--time {text!r}: expected a duration such as 90s, 20m or 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise EffcError(f"--time {text!r}: must be more than zero")
    return seconds


def parse_tracker(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EffcError(f"--rpc-tracker {address!r}: expected HOST:PORT such as 127.0.0.1:9190")
    return host, int(port)


@dataclass
class TaskResult:
    """One tuning task. status: "tuned", "in database" (tuned by an earlier run), "few FLOPs" (skipped),
    "not reached" (the time budget ran out first), "failed" (no candidate built and ran; `error` says why; it is
    tried again next run)."""

    name: str
    flops: float
    calls: int
    status: str
    trials: int = 0
    default_us: float | None = None
    best_us: float | None = None
    best_is_default: bool | None = None
    error: str | None = None


@dataclass
class TuneReport:
    db: str
    target: str
    tasks: list[TaskResult] = field(default_factory=list)
    trials: int = 0
    seconds: float = 0.0
    budget_trials: int | None = None
    budget_seconds: float | None = None
    runner: str = "local"

    def to_json(self) -> dict:
        return {**asdict(self), "tasks": [asdict(t) for t in self.tasks]}


def extract_tasks(model, target):
    """(ExtractedTask list, tvm target) of `model` (effc IR) for `target` (effc Target): the PrimFuncs after the
    lowering's `task_passes`, as compile sees them (an int8 model's after the lowering's integer rewrite, as
    TVMBackend.compile runs it)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from effc.backends.tvm import get_lowering
    from effc.backends.tvm.backend import is_quantized
    from effc.backends.tvm.frontend import fold_constants, import_relax

    lowering = get_lowering(target)
    integer = hasattr(lowering, "lower_integer") and is_quantized(model)
    mod, params = import_relax(fold_constants(model, dequantize_weights=not integer))
    if integer:
        mod, _values, _report = lowering.lower_integer(mod, params.get("main", []), target)
    # MetaSchedule needs the core count in the target; the workloads (PrimFuncs) do not depend on it
    tvm_target = tvm.target.Target({**target.tvm, "num-cores": ms.utils.cpu_count(logical=False)})
    with tvm_target:
        mod = tvm.transform.Sequential(lowering.task_passes(target))(mod)
    return list(ms.relax_integration.extract_tasks(mod, tvm_target)), tvm_target


def _default_schedule(func, target):
    """The lowering's default schedule of `func` as a tvm.s_tir.Schedule, or the unscheduled function."""
    from tvm import s_tir

    from effc.backends.tvm import get_lowering

    sch = get_lowering(target).default_schedule(func, target)
    return sch if sch is not None else s_tir.Schedule(func)


def _tuning_identity(target_json: dict) -> tuple:
    """What makes tuning records valid for a target: its name, CPU and TVM target (not its description)."""
    return target_json.get("name"), target_json.get("cpu"), target_json.get("tvm")


def _load_state(db_dir: Path, target_json: dict) -> dict:
    path = db_dir / STATE_FILE
    if not path.is_file():
        if (db_dir / "database_tuning_record.json").exists():
            raise EffcError(f"--db {db_dir}: a MetaSchedule database that effc did not write (no {STATE_FILE})")
        return {"target": target_json, "workloads": {}}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise EffcError(f"--db {db_dir}: {STATE_FILE} is corrupted") from None
    if _tuning_identity(state.get("target") or {}) != _tuning_identity(target_json):
        raise EffcError(f"--db {db_dir} holds records for another target ({state.get('target', {}).get('name')}, "
                        f"cpu {state.get('target', {}).get('cpu')}); use another --db")
    return state


def check_db(db_dir: str | Path, target) -> Path:
    """The database folder for compile: EffcError when it is missing or was tuned for another target."""
    db = Path(db_dir)
    if not (db / STATE_FILE).is_file():
        raise EffcError(f"--db {db}: no tuning database there (run `effc tune` first)")
    _load_state(db, target.to_json())
    return db


def alloc_arguments(session, device, args_info, alloc_repeat: int):
    """MetaSchedule's RPC argument allocation, filling tensors from here when the board's runtime lacks
    `tvm.contrib.random.random_fill_for_measure` (the runtime-only aarch64 wheel has no USE_RANDOM)."""
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    try:
        fill = session.get_function("tvm.contrib.random.random_fill_for_measure")
    except Exception:  # not on this board: send values from here
        rng = np.random.default_rng(0)

        def fill(tensor) -> None:
            values = rng.uniform(-1, 1, size=tuple(tensor.shape))
            tensor.copyfrom(values.astype(str(tensor.dtype)))

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def _make_runner(tracker: str | None, key: str | None):
    from tvm.s_tir import meta_schedule as ms

    if not tracker:
        return ms.runner.LocalRunner(), "local"
    if not key:
        raise EffcError("--rpc-tracker needs --rpc-key (the key the boards registered with)")
    host, port = parse_tracker(tracker)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_priority=1,
                                 session_timeout_sec=120)
    try:
        servers = config.count_num_servers(allow_missing=True)
    except Exception as exc:  # the tracker client raises bare errors with long messages
        raise EffcError(f"cannot reach the RPC tracker at {tracker}: {str(exc).splitlines()[0][:200]}") from None
    if servers == 0:
        raise EffcError(f"no RPC server is registered with the tracker at {tracker} under key {key!r}")
    runner = ms.runner.RPCRunner(rpc_config=config, max_workers=servers, f_alloc_argument=alloc_arguments)
    return runner, f"rpc tracker {tracker} key {key} ({servers} boards)"


def build_kernel(mod, target, _params=None):
    """MetaSchedule's default_build without its `import tvm.s_tir.tensor_intrin`, which costs about 20 s in every
    fresh builder worker here; the candidates arrive already tensorized, so the build does not need the registry."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _import_cpu_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (which MetaSchedule's TuneContext imports) without its GPU and DSP modules:
    cuda alone takes about 18 s to import here and CPU schedules never use it. Stubs stand in for them in
    sys.modules, in this (tuning) process only and only if nothing imported them before."""
    import sys
    import types

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    for name in ("cuda", "rocm", "hexagon", "metal"):
        sys.modules.setdefault(f"tvm.s_tir.tensor_intrin.{name}", types.ModuleType(f"tvm.s_tir.tensor_intrin.{name}"))
    import tvm.s_tir.tensor_intrin  # noqa: F401  (registers the x86 and ARM intrinsics)


def _cross_export(cross_compiler: str):
    from tvm.support import cc

    def export(rt_mod) -> str:
        import os
        import tempfile

        path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
        rt_mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
        return path

    return export


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    # TVM's messages start with a generic line ("LocalRunner: An exception occurred"); the cause is at the end
    return " / ".join(lines[:1] + lines[-1:])[:300] if len(lines) > 1 else (lines[0][:300] if lines else "")


def _mean_us(run_secs) -> float:
    values = [float(v) for v in run_secs]
    return 1e6 * sum(values) / len(values)


def check_measurable(target, rpc_tracker: str | None) -> None:
    """EffcError when candidates for `target` cannot be timed: no board for another architecture, no GPU here."""
    if target.device == "cuda" and not rpc_tracker:
        import tvm

        if not tvm.cuda(0).exist:
            raise EffcError(f"--target {target.name} tunes on an NVIDIA GPU, and this machine has none TVM can use: "
                            "tune on a GPU machine, or with --rpc-tracker and --rpc-key for one")
    if target.cross_compiler and not rpc_tracker:
        raise EffcError(f"--target {target.name} runs on another architecture: tune with --rpc-tracker and --rpc-key "
                        "so a board times the kernels")


def tune(model, target, db_dir: str | Path, *, trials: int | None = None, seconds: float | None = None,
         min_flops: float = MIN_FLOPS, rpc_tracker: str | None = None, rpc_key: str | None = None,
         progress: Callable[[float, float, str], None] | None = None, seed: int = 0) -> TuneReport:
    """Tune `model` (effc IR, passes already run) for `target` into the MetaSchedule database folder `db_dir`.

    trials: the most candidates measured in this run; seconds: wall-clock budget of this run (at least one is given).
    progress(done, total, text) is called as work completes (total in trials, or in seconds with a time budget only).
    Returns a TuneReport; EffcError for a target TVM does not compile, a foreign database, an unreachable tracker.
    """
    import tvm_ffi
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    from effc.fileio import atomic_path

    if trials is None and seconds is None:
        raise EffcError("give a tuning budget: --trials N or --time DURATION")
    if target.backend != "tvm":
        raise EffcError(f"--target {target.name} is not compiled by TVM: there is nothing to tune")
    start = time.monotonic()
    deadline = start + seconds if seconds else None
    say = progress or (lambda done, total, text: None)
    db_dir = Path(db_dir).expanduser()
    state = _load_state(db_dir, target.to_json())
    runner, runner_text = _make_runner(rpc_tracker, rpc_key)
    check_measurable(target, rpc_tracker)
    report = TuneReport(str(db_dir), target.name, budget_trials=trials, budget_seconds=seconds, runner=runner_text)
    extracted, tvm_target = extract_tasks(model, target)
    if target.device == "cpu":
        from effc.backends.tvm.integer.dot import register_for_metaschedule

        _import_cpu_intrinsics()
        register_for_metaschedule()  # after TVM's registry: MetaSchedule's VNNI candidates take effc's implementation

    todo = []
    for task in extracted:
        func = task.dispatched[0]
        flops = float(estimate_tir_flops(func))
        key = str(tvm_ffi.structural_hash(func))
        result = TaskResult(task.task_name, flops, int(task.weight), "tune")
        known = state["workloads"].get(key)
        if known:
            result.status, result.trials = "in database", known["trials"]
            result.default_us, result.best_us = known.get("default_us"), known.get("best_us")
            result.best_is_default = known.get("best_is_default")
        elif flops < min_flops:
            result.status = "few FLOPs"
        else:
            todo.append((task, key, result))
        report.tasks.append(result)
    todo.sort(key=lambda item: -item[2].flops * item[2].calls)  # expected gain first: a time budget cuts the tail
    report.tasks.sort(key=lambda t: (t.status != "tune", -t.flops * t.calls))

    if not todo:
        if not (db_dir / STATE_FILE).is_file():  # an empty database, still one that compile --db accepts
            with atomic_path(db_dir, directory=True) as work:
                (work / STATE_FILE).write_text(json.dumps(state, indent=1))
        report.seconds = time.monotonic() - start
        return report
    per_task = max(1, trials // len(todo)) if trials else 1000
    # a batch is the unit the time budget is checked at: about a minute's budget per candidate of a batch (ResNet-18's
    # 60-candidate batches took 90 s here and overran a 20-minute budget by 108 s)
    per_iter = min(64, per_task) if trials else min(64, max(8, int(seconds / 60)))
    global_trials = trials if trials else per_task * len(todo)
    total = float(global_trials) if trials else float(seconds)

    with atomic_path(db_dir, directory=True) as work:
        if db_dir.is_dir():
            shutil.copytree(db_dir, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("logs"))
        database = ms.database.JSONDatabase(work_dir=str(work))
        export = _cross_export(target.cross_compiler) if target.cross_compiler else None
        builder = ms.builder.LocalBuilder(f_build=build_kernel, f_export=export)

        say(0, total, "timing default schedules")
        defaults = _measure_defaults([t for t, _, _ in todo], target, tvm_target, database, runner)
        for (task, key, result), (default_us, error) in zip(todo, defaults):
            result.default_us, result.error = default_us, error
        # now that the default schedules are timed, expected gain is their measured time x calls (what tuning can
        # win back: a slow pooling kernel of few FLOPs comes before a fast convolution); FLOPs x calls where unknown
        todo.sort(key=lambda item: (item[2].default_us is None, -(item[2].default_us or item[2].flops) * item[2].calls))
        report.tasks.sort(key=lambda t: (t.status != "tune", t.default_us is None, -(t.default_us or t.flops) * t.calls))

        done, batch_end = [0], [time.monotonic()]

        @derived_object
        class Watch(ms.measure_callback.PyMeasureCallback):
            """Counts measured candidates, reports progress, ends every task once the time budget is spent."""

            def apply(self, scheduler, task_id, candidates, builder_results, runner_results) -> None:
                done[0] += len(runner_results)
                todo[task_id][2].trials += len(runner_results)
                errors = [r.error_msg for r in [*builder_results, *runner_results] if r.error_msg]
                if errors and not todo[task_id][2].error:
                    todo[task_id][2].error = _first_line(errors[0])
                now = time.monotonic()
                say(done[0] if trials else min(now - start, total), total, f"tuning {todo[task_id][2].name}")
                batch_seconds, batch_end[0] = now - batch_end[0], now
                # stop once the budget is spent, or when another batch as long as this one would overrun it
                if deadline and (now >= deadline or now + batch_seconds > deadline + BUDGET_GRACE_S):
                    for i, record in enumerate(scheduler.tasks_):
                        if not record.is_terminated:
                            scheduler.terminate_task(i)

        if not deadline or time.monotonic() < deadline:
            # MetaSchedule's population of 512 suits budgets of a thousand trials; small budgets get a smaller one
            strategy = ms.search_strategy.EvolutionarySearch(population_size=min(512, max(64, 8 * per_iter)),
                                                             init_min_unmeasured=min(50, max(8, 2 * per_iter)))
            contexts = [ms.TuneContext(mod=task.dispatched[0], target=tvm_target, space_generator="post-order-apply",
                                       search_strategy=strategy, task_name=task.task_name,
                                       num_threads="physical", rand_state=seed + i).clone()
                        for i, (task, _, _) in enumerate(todo)]
            ms.tune_tasks(tasks=contexts, task_weights=[float(task.weight) for task, _, _ in todo], work_dir=str(work),
                          max_trials_global=global_trials, max_trials_per_task=per_task, num_trials_per_iter=per_iter,
                          builder=builder, runner=runner, database=database,
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), Watch()],
                          task_scheduler="round-robin")
        report.trials = done[0]
        for task, key, result in todo:
            if result.trials == 0:
                result.status = "not reached"
                continue
            best = database.get_top_k(database.commit_workload(task.dispatched[0]), 1)
            if not best or _mean_us(best[0].run_secs) >= FAILED_US:  # MetaSchedule records failures as 1e10 s
                result.status = "failed"
                continue
            result.status, result.error = "tuned", None
            result.best_us = _mean_us(best[0].run_secs)
            result.best_is_default = result.default_us is not None and result.best_us >= result.default_us
            state["workloads"][key] = {"name": result.name, "trials": result.trials, "default_us": result.default_us,
                                       "best_us": result.best_us, "best_is_default": result.best_is_default}
        (work / STATE_FILE).write_text(json.dumps(state, indent=1))
    report.seconds = time.monotonic() - start
    return report


def _measure_defaults(tasks, target, tvm_target, database, runner) -> list[tuple[float | None, str | None]]:
    """Build (here, in-process: cheaper than a builder pool) and time each task's default schedule; commit it to
    `database` as a tuning record, the seed a tuned record must beat. (microseconds, None) per task, or (None, why)."""

    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export

    export = _cross_export(target.cross_compiler) if target.cross_compiler else default_export
    inputs, where, schedules = [], [], []
    results: list[tuple[float | None, str | None]] = [(None, None)] * len(tasks)
    for i, task in enumerate(tasks):
        sch = _default_schedule(task.dispatched[0]["main"], target)
        schedules.append(sch)
        try:
            path = export(build_kernel(sch.mod, tvm_target))
        except Exception as exc:  # a default schedule that does not build is simply not a seed
            results[i] = (None, f"default schedule: {type(exc).__name__}: {_first_line(str(exc))}")
            continue
        inputs.append(ms.runner.RunnerInput(path, target.device,
                                            ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])))
        where.append(i)
    for i, runner_input, future in zip(where, inputs, runner.run(inputs)):
        outcome = future.result()
        shutil.rmtree(Path(runner_input.artifact_path).parent, ignore_errors=True)
        if outcome.error_msg is not None:
            results[i] = (None, f"default schedule: {_first_line(outcome.error_msg)}")
        else:
            workload = tasks[i].dispatched[0]
            database.commit_tuning_record(ms.database.TuningRecord(
                schedules[i].trace, database.commit_workload(workload), outcome.run_secs, tvm_target,
                ms.arg_info.ArgInfo.from_prim_func(workload["main"])))
            results[i] = (_mean_us(outcome.run_secs), None)
    return results
