"""effc tune / effc compile --tune --db: MetaSchedule tuning with a persistent database, a time budget, RPC boards."""

from __future__ import annotations

import contextlib
import json
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from effc.cli import cli
from effc.zoo import get
from tests.test_rpc import digits_reference, digits_sample, free_port, start_server, stop_server

DIGITS = ["--target", "x86", "--input-shape", "input=1,1,8,8"]
BUDGET_TRIALS = 16


def effc(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The digits model tuned for 16 trials into a fresh database: (db folder, report)."""
    db = tmp_path_factory.mktemp("tuning") / "db"
    result = effc("tune", get("digits").onnx_path, *DIGITS, "--trials", BUDGET_TRIALS, "--db", db, "--json")
    return db, json.loads(result.stdout)


@pytest.mark.tvm
def test_tuning_respects_the_trial_budget_and_fills_the_database(tuned):
    db, report = tuned
    assert 0 < report["trials"] <= BUDGET_TRIALS and report["budget_trials"] == BUDGET_TRIALS
    statuses = {t["name"]: t["status"] for t in report["tasks"]}
    assert set(statuses.values()) <= {"tuned", "not reached", "few FLOPs"} and "tuned" in statuses.values()
    tuned_tasks = [t for t in report["tasks"] if t["status"] == "tuned"]
    # expected gain (the default schedule's measured time x calls) first; the best record is never slower than it
    gains = [t["default_us"] * t["calls"] for t in report["tasks"] if t["status"] != "few FLOPs"]
    assert gains == sorted(gains, reverse=True)
    assert all(t["flops"] < 100_000 for t in report["tasks"] if t["status"] == "few FLOPs")
    assert all(t["default_us"] and t["best_us"] <= t["default_us"] for t in tuned_tasks)
    assert (db / "database_workload.json").is_file() and (db / "database_tuning_record.json").is_file()


@pytest.mark.tvm
def test_a_second_tune_runs_no_new_trials(tuned):
    """What the first tune finished is taken from the database; only tasks its budget did not reach (on a loaded
    machine 25 s may not reach them all) are tuned now, and the records already there stay as they were."""
    db, first = tuned
    records = (db / "database_tuning_record.json").read_text().splitlines()
    report = json.loads(effc("tune", get("digits").onnx_path, *DIGITS, "--trials", 8, "--db", db, "--json").stdout)
    before = {t["name"]: t["status"] for t in first["tasks"]}
    after = {t["name"]: t for t in report["tasks"]}
    assert after.keys() == before.keys()
    for name, status in before.items():
        if status == "tuned":
            assert after[name]["status"] == "in database", (name, after[name])  # its trials: the first tune's
    retuned = sum(t["trials"] for name, t in after.items() if before[name] == "not reached")
    assert report["trials"] == retuned, report["tasks"]
    now = (db / "database_tuning_record.json").read_text().splitlines()
    assert now[:len(records)] == records
    if "not reached" in before.values():  # every task has been reached now: the next tune has nothing to do
        report = json.loads(effc("tune", get("digits").onnx_path, *DIGITS, "--trials", 8, "--db", db, "--json").stdout)
    assert report["trials"] == 0, report["tasks"]


@pytest.mark.tvm
def test_a_spent_time_budget_starts_no_further_batch(tmp_path):
    """With a 1 s budget the defaults' timing alone spends it: at most the one batch already started runs (8
    candidates, the smallest batch); counted in trials, whatever the machine's speed."""
    report = json.loads(effc("tune", get("digits").onnx_path, *DIGITS, "--time", "1s", "--db", tmp_path / "db",
                             "--json").stdout)
    assert report["budget_seconds"] == 1 and report["trials"] <= 8
    assert {t["status"] for t in report["tasks"]} <= {"tuned", "not reached", "few FLOPs", "failed"}


@pytest.mark.tvm
def test_nothing_worth_tuning_still_makes_a_database_compile_accepts(tmp_path):
    db = tmp_path / "db"
    report = json.loads(effc("tune", get("digits").onnx_path, *DIGITS, "--trials", 8, "--min-flops", 1e12, "--db", db,
                             "--json").stdout)
    assert report["trials"] == 0 and {t["status"] for t in report["tasks"]} == {"few FLOPs"}
    effc("compile", get("digits").onnx_path, *DIGITS, "--db", db, "-o", tmp_path / "digits.effc")


def scheduled_kernels(db, *, defaults: bool, model=None) -> dict:
    """{PrimFunc name: attrs} of digits (or `model`, passes run) on compile's path (as TVMBackend.compile takes it,
    an int8 model through the integer rewrite) up to applying the database, and with `defaults` the
    default-schedule pass after it."""
    import tvm
    from tvm import relax

    import effc as effc_api
    from effc.backends.tvm.backend import is_quantized
    from effc.backends.tvm.cpu.lowering import fuse_passes, lower_integer, prepare, schedule_pass
    from effc.backends.tvm.frontend import fold_constants, import_relax
    from effc.ir import load_model
    from effc.targets import get_target

    if model is None:
        model = effc_api.optimize(load_model(get("digits").onnx_path, {"input": [1, 1, 8, 8]}), "default").model
    integer = is_quantized(model)
    mod, params = import_relax(fold_constants(model, dequantize_weights=not integer))
    target = get_target("x86")
    values = params.get("main", [])
    if integer:
        mod, values, _ = lower_integer(mod, values, target)
    mod, _ = prepare(mod, values, target)
    with target.tvm_target():
        passes = fuse_passes() + [relax.transform.MetaScheduleApplyDatabase(str(db))]
        mod = tvm.transform.Sequential(passes + ([schedule_pass(target)] if defaults else []))(mod)
    return {g.name_hint: dict(f.attrs or {}) for g, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.tvm
def test_compile_with_the_database_applies_it_and_matches_onnx_runtime(tuned, tmp_path):
    from effc.artifact import load_artifact

    db, report = tuned
    out = tmp_path / "digits.effc"
    effc("compile", get("digits").onnx_path, *DIGITS, "--db", db, "-o", out)
    x = digits_sample()
    np.testing.assert_allclose(load_artifact(out)(input=x)["logits"], digits_reference(x), atol=1e-4)
    # the tasks tune extracted are the PrimFuncs compile looks up: every tuned one finds its record
    applied = {name for name, attrs in scheduled_kernels(db, defaults=False).items() if "tirx.is_scheduled" in attrs}
    assert {t["name"] for t in report["tasks"] if t["status"] == "tuned"} <= applied


@pytest.mark.tvm
def test_an_int8_model_tunes_its_integer_kernels_with_the_vnni_intrinsic(tmp_path):
    """digits int8: tune extracts the integer kernels (after the integer rewrite, as compile does), MetaSchedule's
    VNNI candidates tensorize with effc's `dot_16x4_vnni` (TVM's own does not build with LLVM 22) and build and run;
    compile finds a record for every tuned kernel, and its outputs stay within one step of ORT's int8 model."""
    import effc as effc_api
    from effc.calib import CalibrationData
    from effc.onnx_runtime import run_model
    from effc.pipeline.context import Context
    from effc.targets import get_target
    from tests.test_integer_tvm import _output_step

    if "avx512_vnni" not in get_target("x86").isa.int8_dot:
        pytest.skip("this host's CPU has no AVX-512 VNNI")
    z, db = get("digits"), tmp_path / "db"
    report = json.loads(effc("tune", z.onnx_path, *DIGITS, "--passes", "int8", "--calib", z.calib_path, "--trials", 8,
                             "--db", db, "--json").stdout)
    tuned = [t["name"] for t in report["tasks"] if t["status"] == "tuned"]
    assert tuned and all("effc_conv2d_int8" in name for name in tuned), report["tasks"]
    records = [json.loads(line)[1] for line in (db / "database_tuning_record.json").read_text().splitlines()]
    searched = [(json.dumps(trace), secs) for trace, secs, *_ in records if "effc_dot" not in json.dumps(trace)]
    vnni = [secs for trace, secs in searched if '"dot_16x4_vnni"' in trace and '"Tensorize"' in trace]
    assert vnni and min(min(secs) for secs in vnni) < 1.0, searched  # built and ran (failures are recorded as 1e10 s)

    artifact = effc_api.compile(z.onnx_path, "x86", pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                                out=tmp_path / "tuned.effc", input_shapes={"input": [1, 1, 8, 8]}, tuning_db=db)
    quantized = artifact.passes.model
    applied = {name for name, attrs in scheduled_kernels(db, defaults=False, model=quantized).items()
               if "tirx.is_scheduled" in attrs}
    assert set(tuned) <= applied, (tuned, applied)
    step = _output_step(quantized)
    for image in np.load(z.eval_path)["input"][:8].astype(np.float32):
        ours, reference = artifact(input=image[None])["logits"], run_model(quantized, {"input": image[None]})["logits"]
        assert np.all(np.abs(ours - reference) <= step * 1.001) and ours.argmax() == reference.argmax()


@pytest.mark.tvm
def test_the_default_schedules_leave_kernels_from_the_database_alone():
    import tvm

    import effc as effc_api
    from effc.backends.tvm.cpu.lowering import schedule_pass
    from effc.backends.tvm.tuning import extract_tasks
    from effc.ir import load_model
    from effc.targets import get_target

    model = effc_api.optimize(load_model(get("digits").onnx_path, {"input": [1, 1, 8, 8]}), "default").model
    record = get_target("x86")
    tasks, target = extract_tasks(model, record)
    heaviest = max(tasks, key=lambda t: tvm.s_tir.analysis.estimate_tir_flops(t.dispatched[0])).dispatched[0]["main"]

    def rule_after_default_pass(func):
        with target:
            mod = schedule_pass(record)(tvm.IRModule({"kernel": func}))
        return dict(mod["kernel"].attrs or {}).get("effc.schedule_rule")

    assert rule_after_default_pass(heaviest) is not None  # the pass schedules it when nothing did
    assert rule_after_default_pass(heaviest.with_attr("tirx.is_scheduled", True)) is None  # as ApplyDatabase marks


@contextlib.contextmanager
def rpc_tracker(key: str, server_commands):
    """A TVM RPC tracker on loopback with one server per `server_commands(port, tracker_port, key)` registered under
    `key`; yields the tracker's port. Every process group is stopped afterwards."""
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    port = free_port()
    processes = [start_server([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1)], port)]
    try:
        for command in server_commands:
            server_port = free_port()
            processes.append(start_server(command(server_port, port, key), None))
        config = RPCConfig(tracker_host="127.0.0.1", tracker_port=port, tracker_key=key)
        deadline = time.time() + 180  # an emulated aarch64 Python imports TVM in 20-30 s on a quiet machine
        while config.count_num_servers(allow_missing=True) < len(server_commands):
            if time.time() > deadline or any(p.poll() is not None for p in processes):
                pytest.fail(f"{len(server_commands)} RPC servers did not register with the tracker under {key!r}")
            time.sleep(0.5)
        yield port
    finally:
        for process in processes:
            stop_server(process)


def host_server(port, tracker_port, key):
    return [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
            "--port-end", str(port + 1), "--tracker", f"127.0.0.1:{tracker_port}", "--key", key]


def emulated_aarch64_server(port, tracker_port, key):
    from effc.runners.qemu_aarch64 import qemu_command

    script = ("from tvm.rpc.server import PopenRPCServerState as S; "
              f"S('127.0.0.1', {port}, {port + 1}, tracker_addr=('127.0.0.1', {tracker_port}), key={key!r}, "
              "silent=True).thread.join()")
    return [*qemu_command(), "-c", script]


@pytest.mark.tvm
@pytest.mark.slow
@pytest.mark.parametrize("target, servers", [("x86", [host_server, host_server]), ("arm", [emulated_aarch64_server])])
def test_compile_tune_measures_on_boards_behind_an_rpc_tracker(tmp_path, target, servers):
    from effc.artifact import load_artifact

    with rpc_tracker("effc-board", servers) as port:
        out = tmp_path / "digits.effc"
        result = effc("compile", get("digits").onnx_path, "--target", target, "--input-shape", "input=1,1,8,8",
                      "--tune", "--trials", 4, "--db", tmp_path / "db", "--rpc-tracker", f"127.0.0.1:{port}",
                      "--rpc-key", "effc-board", "-o", out, "--json")
    report = json.loads(result.stdout)["tuning"]
    assert report["runner"] == f"rpc tracker 127.0.0.1:{port} key effc-board ({len(servers)} boards)"
    assert 0 < report["trials"] <= 4
    tuned = [t for t in report["tasks"] if t["status"] == "tuned"]
    assert tuned and all(t["default_us"] and t["best_us"] <= t["default_us"] for t in tuned), report["tasks"]
    x = digits_sample()
    np.testing.assert_allclose(load_artifact(out)(input=x)["logits"], digits_reference(x), atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["tune", "MODEL", "--target", "nowhere", "--trials", "8"], "unknown target"),
    (["tune", "MODEL", "--target", "ort", "--trials", "8"], "not compiled by TVM"),
    (["tune", "MODEL", "--time", "soon"], "expected a duration"),
    (["tune", "MODEL", "--time", "0s"], "more than zero"),
    (["tune", "MODEL", "--trials", "8", "--time", "1m"], "not both"),
    (["tune", "MODEL"], "give a tuning budget"),
    (["tune", "MODEL", "--trials", "8", "--rpc-key", "k"], "--rpc-key needs --rpc-tracker"),
    (["compile", "MODEL", "--tune"], "give a tuning budget"),
    (["compile", "MODEL", "--trials", "8"], "apply with --tune"),
    (["compile", "MODEL", "--db", "DB"], "no tuning database there"),
    (["compile", "MODEL", "--target", "ort", "--db", "DB"], "not compiled by TVM"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    args = [str(get("digits").onnx_path) if a == "MODEL" else str(tmp_path / "db") if a == "DB" else a for a in args]
    result = CliRunner().invoke(cli, [*args, "--input-shape", "input=1,1,8,8", "-o" if args[0] == "compile" else "--json",
                                      *([str(tmp_path / "out.effc")] if args[0] == "compile" else [])])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not (tmp_path / "out.effc").exists() and not (tmp_path / "db").exists()


def test_durations():
    from effc.backends.tvm.tuning import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "20m", "1h30m", "1.5m")] == [90, 90, 1200, 5400, 90]
