"""effc search: the front within an accuracy budget beats single passes, shared studies, resume, the error contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.autosearch import parse_budget
from effc.autosearch.quality import EvalData, Metric
from effc.cli import cli
from effc.zoo import get

DIGITS = get("digits")
BUDGET = 0.005


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """The digits test images split in two: the search sees one half, the front is checked on the other."""
    folder = tmp_path_factory.mktemp("splits")
    data = np.load(DIGITS.eval_path)
    order = np.random.default_rng(0).permutation(len(data["labels"]))
    halves = {"search": order[: len(order) // 2], "held_out": order[len(order) // 2:]}
    for name, index in halves.items():
        np.savez(folder / f"{name}.npz", input=data["input"][index], labels=data["labels"][index])
    return folder


def top1(model, path) -> float:
    return Metric("top1", EvalData.load(path, model), model)(model)


@pytest.mark.slow
def test_a_12_trial_search_beats_every_single_pass_and_holds_on_held_out_data(tmp_path, splits):
    front = effc.search(DIGITS.onnx_path, calib=DIGITS.calib_path, eval=splits / "search.npz", out=tmp_path / "front",
                        budget=f"accuracy_drop<={BUDGET}", objectives=("size",), target="ort", trials=12, seed=0)
    assert len([p for p in front.trials]) == 12 and front.points
    original = effc.load_model(DIGITS.onnx_path)
    base = top1(original, splits / "held_out.npz")
    # the front is within the budget on images the search never saw, up to one image: the budget (0.5 point) is
    # less than one of the 180 held-out images, and a point at the budget's edge on the search half is one image
    # either side of it on the other (measured: prune(ratio=0.5),cluster,int8 lost 0.56 point there)
    one_image = 1 / len(np.load(splits / "held_out.npz")["labels"])
    for point in front.points:
        model = effc.load_model(point.onnx)
        assert top1(model, splits / "held_out.npz") >= base - BUDGET - one_image - 1e-9, point.spec
        assert (tmp_path / "front" / "trials").exists() and effc.load_artifact(point.artifact).meta["pipeline"] == point.spec
    # single passes, each at its best setting within the budget on the search split
    best_single = float("inf")
    for spec in ["prune(ratio=0.1)", "prune(ratio=0.2)", "cluster(k=16,scope=tensor)", "cluster(k=16,scope=channel)",
                 "cluster(k=64,scope=tensor)", "int8(calibrator=percentile)", "int8(calibrator=entropy)"]:
        ctx = effc.Context(calibration=effc.CalibrationData.load(DIGITS.calib_path))
        model = effc.optimize(effc.load_model(DIGITS.onnx_path), f"default,{spec},strip-names", ctx).model
        if top1(model, splits / "search.npz") >= front.original.quality - BUDGET - 1e-9:
            best_single = min(best_single, effc.model_stats(model).file_bytes)
    assert front.best.size_bytes < best_single, (front.best.spec, front.best.size_bytes, best_single)
    saved = json.loads((tmp_path / "front" / "front.json").read_text())
    assert saved["front"][0]["spec"] == front.best.spec and (tmp_path / "front" / "front.png").stat().st_size > 1000
    # the printed spec reproduces the point
    again = effc.compile(DIGITS.onnx_path, "ort", pipeline=front.best.spec,
                         ctx=effc.Context(calibration=effc.CalibrationData.load(DIGITS.calib_path)), out=tmp_path / "again")
    assert effc.model_stats(again.passes.model).file_bytes == front.best.size_bytes


def _search_args(out, *extra):
    return ["search", str(DIGITS.onnx_path), "--calib", str(DIGITS.calib_path), "--eval", str(DIGITS.eval_path),
            "--budget", "accuracy_drop<=0.01", "-o", str(out), *extra]


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [subprocess.Popen([sys.executable, "-m", "effc.cli", *_search_args(tmp_path / f"w{i}", "--trials", "5",
                                                                                   "--storage", storage, "--study", "s")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-800:]
    import optuna

    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    specs = [t.user_attrs["spec"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(specs) == 5 and len(set(specs)) == 5


@pytest.mark.slow
def test_resume_adds_trials_and_an_existing_search_needs_it(tmp_path):
    first = CliRunner().invoke(cli, _search_args(tmp_path, "--trials", "3", "--json"))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, _search_args(tmp_path, "--trials", "5"))
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = CliRunner().invoke(cli, _search_args(tmp_path, "--trials", "5", "--resume", "--json"))
    assert resumed.exit_code == 0, resumed.output
    assert len(json.loads(resumed.output)["trials"]) == 5 and len(json.loads(first.output)["trials"]) == 3


@pytest.mark.parametrize("extra, message", [
    (["--budget", "accuracy<0.9"], "expected accuracy_drop<=X"),
    (["--budget", "accuracy_drop<=5"], "not a fraction"),
    (["--objective", "speed"], "--objective speed"),
    (["--trials", "0"], "--trials': 0 is not in the range x>=1"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open it"),
    (["--metric", "no_such_module:f"], "cannot import it"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, extra, message):
    result = CliRunner().invoke(cli, [*_search_args(tmp_path / "out", "--trials", "2"), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_top1_needs_labels(tmp_path):
    np.savez(tmp_path / "nolabels.npz", input=np.load(DIGITS.eval_path)["input"][:20])
    result = CliRunner().invoke(cli, ["search", str(DIGITS.onnx_path), "--eval", str(tmp_path / "nolabels.npz"),
                                      "--trials", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "needs labels" in result.stderr


def test_budgets_parse_and_measure():
    assert parse_budget("accuracy_drop<=0.01").violation(0.985, 0.99) < 0
    assert parse_budget("accuracy_drop<=0.01").violation(0.975, 0.99) > 0
    assert parse_budget("accuracy>=0.97").violation(0.975, 0.99) < 0


@pytest.mark.tvm
def test_latency_is_measured_on_the_target_for_points_within_the_budget(tmp_path):
    recipe = tmp_path / "space.toml"
    recipe.write_text("[search.prune]\nratio = [0.0, 0.3]\n[search.cluster]\nk = [0]\n[search.int8]\nenabled = [true, false]\n")
    front = effc.search(DIGITS.onnx_path, calib=DIGITS.calib_path, eval=DIGITS.eval_path, out=tmp_path / "front",
                        budget="accuracy_drop<=0.02", objectives=("latency", "size"), target="x86",
                        input_shapes={"input": [1, 1, 8, 8]}, trials=4, recipe=recipe)
    measured = [p for p in front.trials if p.feasible]
    assert measured and all(p.latency_ms > 0 and not p.estimated for p in measured)
    assert front.points and all(effc.load_artifact(p.artifact).meta["target"]["name"] == "x86" for p in front.points)
    assert all(p.estimated for p in front.trials if not p.feasible)
    assert {p.config.get("cluster.k") for p in front.trials} == {0}  # the recipe restricted the space
    assert front.original.latency_ms > 0


@pytest.mark.tvm
def test_a_microcontroller_search_measures_flash_ram_and_emulated_instructions(tmp_path):
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm")
    recipe = tmp_path / "space.toml"
    recipe.write_text("[search.prune]\nratio = [0.0]\n[search.cluster]\nk = [0]\n[search.int8]\nenabled = [true, false]\n")
    front = effc.search(DIGITS.onnx_path, calib=DIGITS.calib_path, eval=DIGITS.eval_path, out=tmp_path / "front",
                        budget="accuracy_drop<=0.02", objectives=("flash", "ram", "latency"), target="cortex-m4",
                        input_shapes={"input": [1, 1, 8, 8]}, trials=3, recipe=recipe)
    base = front.original
    assert base.flash_bytes > 190_000 and 12_288 <= base.ram_bytes and base.latency_ms > 0  # float weights in flash
    int8 = [p for p in front.trials if p.config.get("int8.enabled") and p.feasible]
    assert int8, [p.config for p in front.trials]
    # int8 weights stay int8 in flash, activations in a smaller arena, integer kernels run fewer instructions
    assert all(p.flash_bytes < base.flash_bytes / 3 and p.ram_bytes < base.ram_bytes and p.latency_ms < base.latency_ms
               and not p.estimated for p in int8)
    assert front.points and all(effc.load_artifact(p.artifact).meta["target"]["name"] == "cortex-m4" for p in front.points)


def test_flash_and_ram_objectives_need_a_microcontroller_target(tmp_path):
    result = CliRunner().invoke(cli, [*_search_args(tmp_path / "out", "--trials", "2"), "--objective", "flash"])
    assert result.exit_code == 2 and "microcontroller" in result.stderr, result.output


def test_the_space_has_per_group_prune_ratios_and_int8_float_fallbacks():
    """prune.scope=sensitivity (ratios per group from the measured sensitivity), cluster.assign (GPTQ's entries),
    cluster.small_k (a second cluster pass over the smaller weights) and int8.accuracy_budget (layers fall back to
    float) are dimensions; each is asked only where it matters, and the spec they make runs."""
    import optuna

    from effc.autosearch.space import SearchSpace
    from effc.calib import CalibrationData
    from effc.ir import load_model

    space = SearchSpace()
    params = {"prune.ratio": 0.3, "prune.scope": "sensitivity", "cluster.k": 4, "cluster.scope": "auto",
              "cluster.assign": "gptq", "cluster.small_k": 16, "int8.enabled": True, "int8.calibrator": "minmax", "int8.accuracy_budget": 0.01}
    config = space.suggest(optuna.trial.FixedTrial(params))
    assert config == params
    spec = space.spec(config)
    assert spec == "default,prune(ratio=0.3,scope=sensitivity),cluster(k=4,scope=auto,assign=gptq),cluster(k=16,min_size=128,assign=gptq),int8(calibrator=minmax,accuracy_budget=0.01)"
    assert space.spec(space.suggest(optuna.trial.FixedTrial({"prune.ratio": 0.0, "cluster.k": 0, "int8.enabled": True,
                                                              "int8.calibrator": "percentile", "int8.accuracy_budget": 0.0}))) \
        == "default,int8(calibrator=percentile)"
    ctx = effc.Context(calibration=CalibrationData.load(DIGITS.calib_path))
    effc.optimize(load_model(DIGITS.onnx_path), spec, ctx)
    assert ctx.reports["prune"]["allocation"] and "layers" in ctx.reports["int8"]


def test_the_trial_budget_counts_a_trial_that_finishes_while_it_is_read():
    """A trial of another worker finishing between two reads of the study was once in neither list (a sixth trial
    of five ran): the stub study finishes trial 4 as soon as it has been read once."""
    import optuna

    from effc.autosearch.study import _done_and_ahead

    class Trial:
        def __init__(self, number, state):
            self.number, self.state = number, state

    class FinishingStudy:
        def __init__(self):
            self.trials = [Trial(n, optuna.trial.TrialState.COMPLETE) for n in range(4)]
            self.trials.append(Trial(4, optuna.trial.TrialState.RUNNING))

        def get_trials(self, deepcopy=False, states=None):
            seen = [t for t in self.trials if states is None or t.state in states]
            self.trials[4] = Trial(4, optuna.trial.TrialState.COMPLETE)
            return seen

    done, ahead = _done_and_ahead(FinishingStudy(), 5)
    assert sorted(t.number for t in [*done, *ahead]) == [0, 1, 2, 3, 4]
