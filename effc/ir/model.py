"""The in-memory IR: an onnx-graphsurgeon graph plus model-level metadata.

`load_model` is the one importer: paths (with external data), bytes or `onnx.ModelProto`;
old opsets are upgraded; initializers listed as graph inputs are treated as constants;
shape-only subgraphs are folded where shapes are static; dynamic dims stay symbolic
unless the caller pins them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from google.protobuf.message import DecodeError

from effc.errors import EffcError
from effc.fileio import atomic_path
from effc.ir.structure import StructureError, check_structure

# graphsurgeon prints its warnings to stdout, which would corrupt `--json` output.
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR + 10
# graphsurgeon's constant folding opens ONNX Runtime sessions with the default (warning) log level.
ort.set_default_logger_severity(3)

CANONICAL_OPSET = 17
OLDEST_OPSET = 7
TWO_GB = 2**31
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints for static dims, names for symbolic ones) and numpy dtype of a graph input or output."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: np.dtype

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": str(self.dtype)}


class Model:
    """A model being optimized: `graph` (onnx-graphsurgeon) plus metadata stored in the ONNX file.

    Passes mutate `graph` in place. Never mutate a constant's numpy array in place: copies
    made by `copy()` share them; assign a new array instead.
    """

    def __init__(self, graph: gs.Graph, metadata: Mapping[str, str] | None = None, source: str = "<memory>"):
        self.graph = graph
        self.metadata: dict[str, str] = dict(metadata or {})
        self.source = source
        # Input dims as the file declared them, kept when ONNX Runtime rejects the model with the dims pinned (an
        # untaken If branch that only type-checks for other sizes): files and ORT sessions get these back.
        self.declared_input_dims: dict[str, list[int | str | None]] = {}

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, source: str = "<memory>") -> "Model":
        graph = gs.import_onnx(proto)
        metadata = {p.key: p.value for p in proto.metadata_props}
        return cls(graph, metadata, source)

    def to_proto(self, *, portable: bool = False) -> onnx.ModelProto:
        """The model as ONNX. `portable`: for a file or an ONNX Runtime session, with the declared input dims back
        where ORT rejects the pinned ones (see `declared_input_dims`)."""
        repack_narrow_constants(self.graph)
        proto = gs.export_onnx(self.graph, do_type_check=False)
        # Intermediate shapes are derived data (every consumer infers them) and not free: in a saved file they add
        # bytes, and ONNX Runtime takes them as licence for fusions that can be slower (on the encoder, Add +
        # LayerNormalization became SkipLayerNormalization and ran 15% slower). Exporters do not write them either.
        _drop_value_info(proto.graph)
        del proto.metadata_props[:]
        for key, value in sorted(self.metadata.items()):
            proto.metadata_props.add(key=key, value=value)
        if portable and self.declared_input_dims:
            _set_input_dims(proto, self.declared_input_dims)
        return proto

    def copy(self) -> "Model":
        copied = Model(self.graph.copy(), self.metadata, self.source)
        repack_narrow_constants(copied.graph)  # passes that touch constants leave unpacked 2/4-bit arrays behind
        copied.declared_input_dims = dict(self.declared_input_dims)
        return copied

    @property
    def opset(self) -> int:
        return int(self.graph.opset)

    def input_specs(self) -> list[TensorSpec]:
        return [_spec(t) for t in self.graph.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [_spec(t) for t in self.graph.outputs]

    def constants(self) -> list[gs.Constant]:
        """Every constant tensor of the main graph (initializers and Constant-node values)."""
        return [t for t in self.graph.tensors().values() if isinstance(t, gs.Constant)]

    def unique_name(self, prefix: str) -> str:
        """A node or tensor name not yet used in the graph."""
        taken = set(self.graph.tensors()) | {n.name for n in self.graph.nodes}
        if prefix not in taken:
            return prefix
        i = 1
        while f"{prefix}_{i}" in taken:
            i += 1
        return f"{prefix}_{i}"

    def check_node_refs(self, names, option: str) -> None:
        """EffcError when an entry of a pass option naming nodes (`int8(exclude=...)`) is neither a node name nor an
        op type of this model: a typo, or a value of the wrong type, must not be silently ignored."""
        known = {n.name for n in self.graph.nodes} | {n.op for n in self.graph.nodes}
        unknown = [str(name) for name in names if name not in known]
        if unknown:
            raise EffcError(f"{option}: {', '.join(repr(u) for u in unknown)} is neither a node name nor an op type of "
                            f"the model (`effc inspect` lists them)")

    def cleanup(self) -> "Model":
        """Drop dead nodes and tensors, then restore topological order."""
        self.graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return self

    def infer_shapes(self) -> "Model":
        """Recompute intermediate shapes and dtypes after a rewrite (stale ones are dropped first)."""
        keep = {id(t) for t in self.graph.inputs}
        for tensor in self.graph.tensors().values():
            if isinstance(tensor, gs.Variable) and id(tensor) not in keep:
                is_output = any(tensor is o for o in self.graph.outputs)
                tensor.shape = None if not is_output else tensor.shape
        proto = _infer(self.to_proto())
        inferred = gs.import_onnx(proto)
        known = inferred.tensors()
        for name, tensor in self.graph.tensors().items():
            other = known.get(name)
            if isinstance(tensor, gs.Variable) and other is not None and other.shape is not None:
                tensor.shape = other.shape
                if other.dtype is not None:
                    tensor.dtype = other.dtype
        return self

    def serialized_size(self) -> int:
        return self.to_proto().ByteSize()

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(self, path)


def _drop_value_info(graph: onnx.GraphProto) -> None:
    """Drop intermediate shapes here and in every subgraph: a subgraph's were traced at one size by the exporter (or
    written by graphsurgeon before a rewrite), and ONNX Runtime trusts them over what it infers."""
    del graph.value_info[:]
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                _drop_value_info(sub)


def repack_narrow_constants(graph: gs.Graph) -> None:
    """gs exports 2- and 4-bit arrays one byte per value, a tensor ONNX Runtime rejects (so graphsurgeon's constant
    folding quietly leaves cluster decoders unfolded); hand it ONNX's packed tensor instead."""
    from onnx_graphsurgeon.ir.tensor import LazyValues

    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and not isinstance(tensor._values, LazyValues) and tensor.dtype.itemsize == 1 \
                and tensor.dtype.name in ("uint4", "int4", "uint2", "int2"):
            tensor.values = LazyValues(onnx.numpy_helper.from_array(tensor.values, tensor.name))


def _spec(tensor: gs.Tensor) -> TensorSpec:
    shape = None if tensor.shape is None else tuple(d if isinstance(d, (int, str)) or d is None else int(d) for d in tensor.shape)
    dtype = np.dtype(tensor.dtype) if tensor.dtype is not None else np.dtype("float32")
    return TensorSpec(tensor.name, shape, dtype)


def load_model(
    source: str | os.PathLike | bytes | onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Model:
    """Import an ONNX model into the IR, or raise EffcError with a one-line reason."""
    proto, label = _read(source)
    _check_header(proto, label)
    proto = _upgrade_opset(proto, label)
    _drop_initializer_inputs(proto)
    declared = {}
    if input_shapes:
        declared = _declared_dims(proto)
        _pin_shapes(proto, input_shapes, label)
        if not _has_subgraphs(proto.graph) or _ort_loads(proto) or not _ort_loads(_with_input_dims(proto, declared)):
            declared = {}
    try:
        graph = gs.import_onnx(proto)
    except Exception as exc:  # graphsurgeon raises its own and bare Python errors for malformed protos
        raise EffcError(f"{label}: invalid model: {_first_line(exc)}") from None
    _name_nodes(graph)
    model = Model(graph, {p.key: p.value for p in proto.metadata_props}, label)
    model.declared_input_dims = declared
    try:
        check_structure(model.graph, require_order=False)
    except StructureError as exc:
        raise EffcError(f"{label}: invalid graph: {exc}") from None
    model.graph.toposort()
    try:
        onnx.checker.check_model(_for_checker(model.to_proto()))
    except (onnx.checker.ValidationError, Exception) as exc:  # the checker raises several types
        raise EffcError(f"{label}: invalid model: {_first_line(exc)}") from None
    model.infer_shapes()
    fold_shape_subgraphs(model)
    return model


def fold_shape_subgraphs(model: Model) -> bool:
    """Fold integer-valued subgraphs (shape arithmetic) whose inputs are static; returns whether anything changed."""
    graph = model.graph
    before = len(graph.nodes)

    def not_shape_math(node: gs.Node) -> bool:
        # shape math is small integer vectors; larger integer tensors (quantized or clustered weights) stay as stored
        return not node.outputs or any(not _is_small_integer(o) for o in node.outputs)

    # pinned dims baked into If branches can leave an untaken branch ill-typed (see Model.declared_input_dims)
    graph.fold_constants(fold_shapes=True, error_ok=True, should_exclude_node=not_shape_math, flatten_subgraphs=False,
                         recurse_subgraphs=not model.declared_input_dims)
    model.cleanup()
    changed = len(graph.nodes) != before
    if changed:
        model.infer_shapes()
    return changed


SHAPE_MATH_MAX_ELEMENTS = 64


def _is_small_integer(tensor: gs.Tensor) -> bool:
    try:
        dtype = np.dtype(tensor.dtype)
    except TypeError:  # 4-bit and other types numpy cannot name
        return False
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_) or tensor.shape is None:
        return False
    return all(isinstance(d, int) for d in tensor.shape) and int(np.prod(tensor.shape)) <= SHAPE_MATH_MAX_ELEMENTS


def save_model(model: Model, path: str | os.PathLike) -> Path:
    """Write atomically; models over 2 GB get their weights in a side file `<name>.data`."""
    path = Path(path)
    proto = model.to_proto(portable=True)
    big = sum(c.values.nbytes for c in model.constants()) > TWO_GB - 2**24
    if not big:
        with atomic_path(path) as tmp:
            tmp.write_bytes(proto.SerializeToString())
        return path
    data_name = path.name + ".data"
    with atomic_path(path) as tmp, atomic_path(path.parent / data_name) as tmp_data:
        onnx.save_model(proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True, location=tmp_data.name)
        _relocate_external(tmp, tmp_data.name, data_name)
    return path


def _relocate_external(model_path: Path, old: str, new: str) -> None:
    proto = onnx.load(model_path, load_external_data=False)
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    model_path.write_bytes(proto.SerializeToString())


def _read(source) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        return source, "<model>"
    if isinstance(source, (bytes, bytearray)):
        return _parse(bytes(source), "<bytes>"), "<bytes>"
    path = Path(source)
    label = str(path)
    if not path.exists():
        raise EffcError(f"{label}: no such file")
    if path.is_dir():
        raise EffcError(f"{label}: is a folder, not an ONNX file")
    size = path.stat().st_size
    if size == 0:
        raise EffcError(f"{label}: empty file, not an ONNX model")
    if size >= TWO_GB:
        raise EffcError(f"{label}: larger than 2 GB without external data; save the weights in a side file (onnx external data)")
    proto = _parse(path.read_bytes(), label)
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except (FileNotFoundError, OSError) as exc:
        raise EffcError(f"{label}: external data missing: {_first_line(exc)}") from None
    except Exception as exc:  # onnx raises ValidationError for locations outside the folder
        raise EffcError(f"{label}: bad external data reference: {_first_line(exc)}") from None
    return proto, label


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise EffcError(f"{label}: not an ONNX model, or truncated/corrupted ({_first_line(exc)})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.opset_import:
        raise EffcError(f"{label}: not an ONNX model (no graph, IR version or opset)")
    return proto


def _drop_unused_domains(proto: onnx.ModelProto) -> None:
    """Exporters declare domains no node uses (ai.onnx.training, com.microsoft.nchwc, ...); only used ones matter."""
    used = _used_domains(proto.graph) | {f.domain for f in proto.functions}
    for f in proto.functions:
        used |= {n.domain for n in f.node}
    keep = [op for op in proto.opset_import if op.domain in ("", "ai.onnx") or op.domain in used or op.domain in KNOWN_DOMAINS]
    if len(keep) != len(proto.opset_import):
        del proto.opset_import[:]
        proto.opset_import.extend(keep)


def _used_domains(graph: onnx.GraphProto) -> set[str]:
    used = set()
    for node in graph.node:
        used.add(node.domain)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                used |= _used_domains(sub)
    return used


def _unknown_dims_symbolic(proto: onnx.ModelProto) -> None:
    """Old exporters (paddle2onnx among them) write `dim_value: -1` for a dynamic dim: make it a named symbolic dim."""
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = f"{value.name}_dim{i}"


def _check_header(proto: onnx.ModelProto, label: str) -> None:
    _drop_unused_domains(proto)
    _unknown_dims_symbolic(proto)
    local_domains = {f.domain for f in proto.functions}
    unknown = sorted({op.domain for op in proto.opset_import} - KNOWN_DOMAINS - local_domains)
    if unknown:
        raise EffcError(f"{label}: unknown opset domain {', '.join(repr(d) for d in unknown)}; effc knows {', '.join(repr(d) for d in sorted(KNOWN_DOMAINS))}")
    used = {n.domain for n in proto.graph.node}
    declared = {op.domain for op in proto.opset_import} | {"ai.onnx"}
    missing = sorted(d for d in used if d not in declared and not (d == "" and "ai.onnx" in declared))
    if missing:
        raise EffcError(f"{label}: nodes use domain {missing[0]!r}, which the model does not import")
    version = _default_opset(proto)
    if version is not None and version < OLDEST_OPSET:
        raise EffcError(f"{label}: opset {version} is older than {OLDEST_OPSET}, the oldest effc imports")


def _default_opset(proto: onnx.ModelProto) -> int | None:
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    return None


def _drop_initializer_inputs(proto: onnx.ModelProto) -> None:
    # Old exporters (IR < 4) listed every initializer as a graph input too; they are weights, not inputs.
    names = {init.name for init in proto.graph.initializer}
    keep = [i for i in proto.graph.input if i.name not in names]
    if len(keep) != len(proto.graph.input):
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
        if proto.ir_version < 4:
            proto.ir_version = 4


def _upgrade_opset(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    version = _default_opset(proto)
    if version is None or version >= CANONICAL_OPSET:
        return proto
    try:
        upgraded = onnx.version_converter.convert_version(proto, CANONICAL_OPSET)
    except Exception as exc:  # the converter raises RuntimeError/ValidationError with the failing op
        raise EffcError(f"{label}: cannot upgrade opset {version} to {CANONICAL_OPSET}: {_first_line(exc)}") from None
    return upgraded


def _pin_shapes(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], label: str) -> None:
    inputs = {i.name: i for i in proto.graph.input}
    for name, dims in shapes.items():
        if name not in inputs:
            raise EffcError(f"{label}: no input named {name!r}; inputs are {', '.join(inputs) or 'none'}")
        tensor_shape = inputs[name].type.tensor_type.shape
        if len(tensor_shape.dim) and len(tensor_shape.dim) != len(dims):
            raise EffcError(f"{label}: input {name!r} has rank {len(tensor_shape.dim)}, got shape {list(dims)}")
        for i, (dim, value) in enumerate(zip(tensor_shape.dim, dims)):
            if dim.HasField("dim_value") and dim.dim_value != value:
                raise EffcError(f"{label}: input {name!r} dim {i} is fixed at {dim.dim_value}, cannot pin it to {value}")
        del tensor_shape.dim[:]
        for value in dims:
            if int(value) <= 0:
                raise EffcError(f"{label}: input {name!r}: dims must be positive, got {list(dims)}")
            tensor_shape.dim.add(dim_value=int(value))


def _declared_dims(proto: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    return {i.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input if i.type.HasField("tensor_type") and i.type.tensor_type.HasField("shape")}


def _set_input_dims(proto: onnx.ModelProto, dims: Mapping[str, Sequence[int | str | None]]) -> None:
    for value in proto.graph.input:
        if value.name not in dims or len(value.type.tensor_type.shape.dim) != len(dims[value.name]):
            continue
        for dim, declared in zip(value.type.tensor_type.shape.dim, dims[value.name]):
            dim.Clear()
            if isinstance(declared, int):
                dim.dim_value = declared
            elif declared:
                dim.dim_param = declared


def _with_input_dims(proto: onnx.ModelProto, dims) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(proto)
    _set_input_dims(copied, dims)
    return copied


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(attr.HasField("g") or len(attr.graphs) for node in graph.node for attr in node.attribute)


def _ort_loads(proto: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime builds a session for it (type and shape inference of every branch included)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # with its graph optimizations on: constant folding can expose an ill-typed branch
    try:
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # ORT raises its own exception types
        return False
    return True


def _name_nodes(graph: gs.Graph) -> None:
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        name = node.name or f"{node.op}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort; a model it cannot type still runs
        return proto


def _without_data(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The checker only needs structure; skip copying >2 GB of weights into a protobuf."""
    if proto.ByteSize() < TWO_GB - 2**24:
        return proto
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    for init in light.graph.initializer:
        if init.ByteSize() > 1024:
            init.ClearField("raw_data")
            del init.dims[:]
            init.dims.append(0)
    return light


def _for_checker(proto: onnx.ModelProto) -> onnx.ModelProto:
    # graphsurgeon exports dtype-only value_info for tensors it has not shaped yet, and ONNX Runtime accepts graph
    # outputs of unknown rank; the checker rejects both, so give it a copy without them.
    del proto.graph.value_info[:]
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape"):
            value.type.tensor_type.shape.SetInParent()
    return _without_data(proto)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else " ".join(lines[:2])[:300]
