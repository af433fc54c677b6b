"""Pass framework: specs, recipes, options, registry, manager, ledger, instruments, verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs
import pytest

import effc
from effc import Context, EffcError, Pass, PassResult, Pipeline, VerificationError, load_model, register_pass
from effc.pipeline import DumpAfter, Instrument, PassFailure, PassManager
from effc.pipeline.pass_base import option_infos, unregister_pass
from effc.pipeline.spec import format_steps, parse_spec


@pytest.fixture
def toy_passes():
    """Passes registered from outside the package, as another tool would."""

    @dataclass
    class ScaleOptions:
        factor: float = field(default=2.0, metadata={"help": "multiply the output by this"})
        mode: Literal["mul", "add"] = "mul"
        only: tuple[str, ...] = ()
        per_layer: dict[str, float] | None = None

        def validate(self):
            if self.factor <= 0:
                raise ValueError("factor must be positive")

    class Scale(Pass):
        """Multiply the graph output by a constant (changes outputs)."""

        name = "toy-scale"
        kind = "lossy"
        Options = ScaleOptions

        def run(self, model, ctx):
            out = model.graph.outputs[0]
            name, out.name = out.name, model.unique_name(out.name + "_unscaled")  # graph outputs keep their names
            new = gs.Variable(name, dtype=out.dtype, shape=out.shape)
            op = "Mul" if self.options.mode == "mul" else "Add"
            const = gs.Constant(model.unique_name("factor"), np.array(self.options.factor, np.float32))
            model.graph.nodes.append(gs.Node(op, model.unique_name("toy_scale"), inputs=[out, const], outputs=[new]))
            model.graph.outputs[0] = new
            return PassResult(True, {"factor": self.options.factor})

    class LyingLossless(Scale):
        """Claims to be lossless but is not."""

        name = "toy-liar"
        kind = "lossless"

    class Broken(Pass):
        """Leaves a dangling edge."""

        name = "toy-broken"

        def run(self, model, ctx):
            node = model.graph.nodes[0]
            node.inputs[0] = gs.Variable("nowhere", dtype=np.float32)
            return PassResult(True)

    class Counter(Pass):
        """Changes the model twice, then reports no change (fixed-point test)."""

        name = "toy-counter"

        def run(self, model, ctx):
            ctx.cache["count"] = ctx.cache.get("count", 0) + 1
            return PassResult(ctx.cache["count"] <= 2)

    for cls in (Scale, LyingLossless, Broken, Counter):
        register_pass(cls)
    yield {c.name: c for c in (Scale, LyingLossless, Broken, Counter)}
    for cls in (Scale, LyingLossless, Broken, Counter):
        unregister_pass(cls.name)


@pytest.mark.parametrize("text", [
    "dce",
    "default",
    "dce,toy-scale(factor=3.5,mode=add),dce",
    "fixpoint[dce,toy-counter],toy-scale",
    "toy-scale(only=[a,b],per_layer={conv1:0.3,conv2:0.5})",
    'toy-scale(only=["has space","x,y"])',
])
def test_spec_round_trips(toy_passes, text):
    assert str(Pipeline.parse(text)) == text
    assert format_steps(parse_spec(text)) == text


@pytest.mark.parametrize("text, message", [
    ("", "empty pipeline|expected a pass name"),
    ("nope", "unknown pass 'nope'; known passes: .*dce"),
    ("toy-scale(factr=2)", "no option 'factr'; its options: factor, mode, only, per_layer"),
    ("toy-scale(factor=big)", "expected a number"),
    ("toy-scale(mode=div)", "'div' is not one of mul, add"),
    ("toy-scale(factor=-1)", "factor must be positive"),
    ("toy-scale(factor=1", "expected"),
    ("toy-scale(factor=1,factor=2)", "given twice"),
    ("loop[dce]", "unknown group"),
    ("default(x=1)", "takes no options"),
])
def test_bad_specs_fail_before_any_work(toy_passes, text, message):
    with pytest.raises(EffcError, match=message):
        Pipeline.parse(text)


def test_options_are_converted_to_their_types(toy_passes):
    p = Pipeline.parse("toy-scale(factor=3,only=[a,b],per_layer={x:0.5})").steps[0]
    assert p.options.factor == 3.0 and isinstance(p.options.factor, float)
    assert p.options.only == ("a", "b")
    assert p.options.per_layer == {"x": 0.5}
    infos = {o.name: o for o in option_infos(type(p))}
    assert infos["mode"].choices == ("mul", "add") and infos["factor"].help


def test_toml_recipe_matches_spec(tmp_path, toy_passes):
    (tmp_path / "a.toml").write_text('pipeline = "dce,toy-scale(factor=3)"\n')
    (tmp_path / "b.toml").write_text('[[pass]]\nname = "dce"\n\n[[pass]]\nname = "toy-scale"\nfactor = 3\nonly = ["a", "b"]\n')
    assert str(Pipeline.from_recipe(tmp_path / "a.toml")) == "dce,toy-scale(factor=3)"
    assert str(Pipeline.from_recipe(tmp_path / "b.toml")) == "dce,toy-scale(factor=3,only=[a,b])"
    (tmp_path / "bad.toml").write_text("[[pass]\n")
    with pytest.raises(EffcError, match="not valid TOML"):
        Pipeline.from_recipe(tmp_path / "bad.toml")
    (tmp_path / "empty.toml").write_text("x = 1\n")
    with pytest.raises(EffcError, match="needs"):
        Pipeline.from_recipe(tmp_path / "empty.toml")


def test_duplicate_registration_is_refused(toy_passes):
    class Again(Pass):
        """Same name."""

        name = "toy-scale"

    with pytest.raises(ValueError, match="already registered"):
        register_pass(Again)


def test_manager_records_a_ledger_row_per_pass(tiny_model, toy_passes):
    model = load_model(tiny_model)
    ctx = Context(measure_latency=True, latency_repeats=3, measure_drift=True)
    result = effc.optimize(model, "dce,toy-scale(factor=2)", ctx)
    steps = [r.step for r in result.ledger.rows]
    assert steps == ["input", "dce", "toy-scale(factor=2)"]
    last = result.ledger.rows[-1]
    assert last.stats.nodes == result.ledger.rows[0].stats.nodes + 1
    assert last.latency.median_ms > 0
    assert last.drift.max_abs > 0 and result.ledger.rows[1].drift.max_abs == 0
    assert last.pass_stats == {"factor": 2.0}
    assert result.model.metadata["effc.pipeline"] == "dce,toy-scale(factor=2)"
    assert result.ledger.to_json()["rows"][2]["drift"]["max_abs"] == last.drift.max_abs


def test_fixpoint_repeats_until_nothing_changes(tiny_model, toy_passes):
    ctx = Context()
    effc.optimize(load_model(tiny_model), "fixpoint[toy-counter]", ctx)
    assert ctx.cache["count"] == 3


def test_lossless_pass_that_changes_outputs_is_named(tiny_model, toy_passes):
    with pytest.raises(VerificationError, match="lossless pass toy-liar changed the outputs.*pipeline so far: dce,toy-liar"):
        effc.optimize(load_model(tiny_model), "dce,toy-liar", Context(verify=True))
    # without verification the same pipeline runs
    effc.optimize(load_model(tiny_model), "dce,toy-liar", Context(verify=False))


def test_broken_pass_is_named_with_history(tiny_model, toy_passes):
    with pytest.raises(PassFailure, match="pass toy-broken failed.*dangling.*passes before it: dce"):
        effc.optimize(load_model(tiny_model), "dce,toy-broken")


def test_requirements_are_checked_before_any_pass(tiny_model, toy_passes):
    class NeedsData(Pass):
        """Needs calibration data."""

        name = "toy-needs-data"
        requires = ("calibration",)

        def run(self, model, ctx):
            return PassResult(False)

    register_pass(NeedsData)
    try:
        ctx = Context()
        with pytest.raises(EffcError, match="toy-needs-data needs calibration data"):
            effc.optimize(load_model(tiny_model), "toy-counter,toy-needs-data", ctx)
        assert "count" not in ctx.cache  # nothing ran
    finally:
        unregister_pass("toy-needs-data")


@pytest.mark.parametrize("late", ["int8(exclude=[no_such_node])", "cluster(exclude=[Conv,no_such_node],reconstruct=false)"])
def test_node_names_in_options_are_checked_before_any_pass(tiny_model, toy_passes, late):
    ctx = Context(allow_random_calibration=True)
    with pytest.raises(EffcError, match="'no_such_node' is neither a node name nor an op type"):
        effc.optimize(load_model(tiny_model), f"toy-counter,{late}", ctx)
    assert "count" not in ctx.cache  # the pass before it never ran


def test_instruments_and_dump_after(tmp_path, tiny_model, toy_passes):
    calls = []

    class Recorder(Instrument):
        def before_pass(self, p, model, ctx):
            calls.append(("before", p.name, list(ctx.history), list(ctx.upcoming)))

        def after_pass(self, p, model, ctx, result, seconds):
            calls.append(("after", p.name, result.changed))

    PassManager("dce,toy-scale", [Recorder(), DumpAfter(["toy-scale"], tmp_path)]).run(load_model(tiny_model), Context())
    assert calls[0] == ("before", "dce", [], ["toy-scale"])
    assert calls[2] == ("before", "toy-scale", ["dce"], [])
    assert calls[3] == ("after", "toy-scale", True)
    dumped = list(tmp_path.glob("*.onnx"))
    assert [p.name for p in dumped] == ["01-toy-scale.onnx"]
    assert [n.op for n in load_model(dumped[0]).graph.nodes][-1] == "Mul"


def test_a_pass_can_be_disabled_by_name_in_the_context_or_the_config(tiny_model, toy_passes):
    ctx = Context(disabled_passes=("toy-scale",))
    result = effc.optimize(load_model(tiny_model), "dce,toy-scale", ctx)
    assert [r.step for r in result.ledger.rows] == ["input", "dce"]
    assert result.model.metadata["effc.disabled_passes"] == "toy-scale"
    with effc.pass_config(disabled_passes=("dce",)):
        result = effc.optimize(load_model(tiny_model), "dce,toy-scale")
    assert [r.step for r in result.ledger.rows] == ["input", "toy-scale"]
    with pytest.raises(EffcError, match="cannot disable unknown pass 'nope'"):
        effc.optimize(load_model(tiny_model), "dce", Context(disabled_passes=("nope",)))


def test_an_instrument_may_veto_a_pass(tiny_model, toy_passes):
    class OnlyDce(Instrument):
        def should_run(self, p, ctx):
            return p.name == "dce"

    result = PassManager("dce,toy-scale", [OnlyDce()]).run(load_model(tiny_model))
    assert [r.step for r in result.ledger.rows] == ["input", "dce"]


def test_strict_checks_are_configuration(tiny_model, toy_passes):
    """The ONNX checker runs after each pass where the context or the scoped config asks for it (tests: always)."""
    import onnx

    class TypeLie(Pass):
        """Gives the output a wrong element type: the structure check passes, the ONNX checker does not."""

        name = "toy-type-lie"

        def run(self, model, ctx):
            model.graph.outputs[0].dtype = np.int64
            model.graph.nodes[-1].attrs["no_such_attr"] = 1
            return PassResult(True)

    register_pass(TypeLie)
    try:
        assert effc.pipeline.current_config().strict_checks  # tests/conftest.py turns them on
        with pytest.raises(PassFailure, match="toy-type-lie"):
            effc.optimize(load_model(tiny_model), "toy-type-lie")
        effc.optimize(load_model(tiny_model), "toy-type-lie", Context(strict_checks=False))
        with effc.pass_config(strict_checks=False):
            effc.optimize(load_model(tiny_model), "toy-type-lie")
    finally:
        unregister_pass("toy-type-lie")
    assert onnx  # the checker is ONNX's own


def test_verification_keeps_no_copy_of_the_model(tiny_model, toy_passes, monkeypatch):
    """Verification and drift compare outputs computed once from the input; the pipeline copies no model."""
    copies = []
    copy = effc.Model.copy
    monkeypatch.setattr(effc.Model, "copy", lambda self: copies.append(1) or copy(self))
    effc.optimize(load_model(tiny_model), "dce,toy-scale", Context(verify=True, measure_drift=True))
    assert copies == []


def test_pass_objects_compose_without_specs(tiny_model, toy_passes):
    scale = toy_passes["toy-scale"](factor=4.0)
    result = PassManager([scale]).run(load_model(tiny_model))
    x = np.ones((1, 4), np.float32)
    from effc.onnx_runtime import run_model

    np.testing.assert_allclose(run_model(result.model, {"x": x})["y"], 4 * run_model(tiny_model, {"x": x})["y"], rtol=1e-6)


def test_plugins_register_through_entry_points(monkeypatch, tmp_path):
    import importlib.metadata
    import sys

    import effc.pipeline.pass_base

    (tmp_path / "effc_toy_plugin.py").write_text(
        "from effc import Pass, PassResult, register_pass\n"
        "@register_pass\n"
        "class Plugged(Pass):\n"
        '    """A pass from an installed plugin."""\n'
        '    name = "toy-plugged"\n'
        "    def run(self, model, ctx):\n"
        "        return PassResult(False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint("toy", "effc_toy_plugin", "effc.passes")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry] if group == "effc.passes" else [])
    monkeypatch.setattr(effc.pipeline.pass_base, "_PLUGINS_LOADED", False)
    try:
        assert "toy-plugged" in effc.registered_passes()
    finally:
        unregister_pass("toy-plugged")
        sys.modules.pop("effc_toy_plugin", None)
