"""QDQ islands -> integer Relax, on any target.

effc's int8 pass writes `Q(act(add(conv(DQ(x), DQ(W)), DQ(b))))` (Conv, Gemm as matmul with transposed weights,
MatMul; act: Relu, Clip as maximum/minimum, or none). TVM 0.27 imports that as float math. Here each island whose
activation scale and zero point are per tensor and whose weights are constants (per-channel scales, zero point 0)
becomes:

    acc = conv2d(pad(xq, value=zx), Wq, out_dtype=int32)          (matmul(xq, Wq^T, out_dtype=int32))
    acc = acc + (bq - zx * sum(Wq[c]))                             the zero-point correction folded into the bias
    yq  = clip(round(float(acc) * (sx * sw[c] / sy)) + zy, lo, hi) ONNX Runtime's requantization (round half to
                                                                   even of one float multiply)

so activations stay uint8/int8 between integer ops. A matmul of two per-tensor quantized activations (attention's
Q.K^T and P.V) becomes `matmul(int32(aq) - za, int32(bq) - zb)`: both corrections depend on the data, so they are
subtracted before the product rather than folded. Q(max_pool2d/reshape/...(DQ(xq))) at one scale and zero point
becomes the op on xq itself (exact). An island that ends in float (a last Gemm) becomes
`float(acc) * (sx * sw[c])` and its bias add stays float. Everything else (elementwise Q/DQ pairs, pooling, an
Add of two quantized tensors outside blocked islands) is left as it is and, for convolutions and matmuls, reported
as a float island with the reason.

The input: an IRModule whose `main` holds its weights as constants (see params.bind_params).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

CONV, MATMUL = "relax.nn.conv2d", "relax.matmul"
Q, DQ = "relax.quantize", "relax.dequantize"


@dataclass(frozen=True)
class Island:
    """One convolution or matmul: whether it runs as integer arithmetic, what it became, or why not."""

    op: str  # "conv2d" | "matmul"
    shape: str  # the weight's (or second operand's) shape, e.g. "32x16x3x3"
    integer: bool
    detail: str  # integer: the epilogue ("bias+relu -> uint8"); float: the reason

    def to_json(self) -> dict:
        return {"op": self.op, "shape": self.shape, "integer": self.integer, "detail": self.detail}


def lower_qdq(mod, conv_kernel=None, float_reason=None, blocked_kernel=None) -> tuple[object, list[Island]]:
    """(module with every rewritable island of `main` in integer Relax, one Island per conv2d/matmul).

    conv_kernel: a target's integer convolution, `(builder, xq, int8 weight, conv2d attrs, zero point) -> int32
    NCHW expression or None` (None: Relax's conv2d with out_dtype int32 over the input padded with the zero point).
    float_reason: `(kind, xq, int8 weight, attrs) -> str | None`; a reason keeps that island float (dequantized
    weights) and is reported, e.g. where the target has no integer kernel for it.
    blocked_kernel: like conv_kernel, tried first, but it may get a blocked input (a blocked.Blocked xq, where its
    producer's output is blocked) and returns a Blocked int32 output or None; the requantized result then stays
    blocked for the ops after it that read blocks (blocked.py).
    """
    import tvm
    from tvm import relax

    main = mod["main"]
    bindings = _bindings(main)
    uses = _use_counts(main)
    plans, islands = _plan(bindings, uses, float_reason)
    if not plans:
        return mod, islands
    rewriter = _rewriter_class()(mod, plans, conv_kernel, blocked_kernel, bindings, uses)
    new_main = rewriter.visit_expr(main)
    mod = rewriter.builder_.get()  # the kernels the rewrite added besides the original functions
    mod = tvm.IRModule({**{gvar: f for gvar, f in mod.functions_items()}, mod.get_global_var("main"): new_main},
                       attrs=mod.attrs)
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    return mod, islands


# ---------------------------------------------------------------------------------------------------- analysis


def _bindings(func) -> dict:
    """Var -> bound value, for every VarBinding of `func`."""
    from tvm import relax

    return {binding.var: binding.value for block in func.body.blocks for binding in block.bindings
            if isinstance(binding, relax.VarBinding)}


def _use_counts(func) -> dict:
    from tvm import relax

    counts: dict = {}

    def visit(node):
        if isinstance(node, relax.Call):
            for arg in node.args:
                if isinstance(arg, relax.Var):
                    counts[arg] = counts.get(arg, 0) + 1
        elif isinstance(node, relax.SeqExpr) and isinstance(node.body, relax.Var):
            counts[node.body] = counts.get(node.body, 0) + 1
        elif isinstance(node, relax.Tuple):
            for field in node.fields:
                if isinstance(field, relax.Var):
                    counts[field] = counts.get(field, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


def _op(value) -> str | None:
    from tvm import relax

    return value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else None


def _const(expr) -> np.ndarray | None:
    import tvm

    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


@dataclass
class _Plan:
    """How to rewrite one binding: the matched island."""

    kind: str  # "conv2d" | "matmul"
    anchor: object  # the conv2d/matmul call
    xq: object  # the quantized activation (a Relax var)
    zx: int
    sx: np.float32
    weight: np.ndarray  # int8, [O, I/g, KH, KW] or [K, O]
    sw: np.ndarray  # float32 per output channel
    bias: np.ndarray  # int32 per output channel (zeros if none)
    out: dict | None  # requantize to: {"scale", "zero", "dtype", "lo", "hi"}; None: float output
    rhs: object = None  # a matmul of two activations: the second's quantized var (weight is None, sw its scale)
    zr: int = 0  # ... and its zero point


def _dequantized(bindings, expr):
    """(quantized input, scale, zero point, axis) when `expr` is bound to dequantize(...), else None."""
    value = bindings.get(expr)
    if _op(value) != DQ:
        return None
    return value.args[0], value.args[1], value.args[2], int(value.attrs.axis)


def _activation_params(bindings, expr):
    """(xq, sx, zx) for a per-tensor dequantized activation, or a reason string."""
    dq = _dequantized(bindings, expr)
    if dq is None:
        return "its input is not dequantized from int8 (a float input)"
    xq, scale, zero, _ = dq
    sx, zx = _const(scale), _const(zero)
    if sx is None or zx is None:
        return "the input's scale or zero point is not a constant"
    if sx.size != 1 or zx.size != 1:
        return "the input is quantized per channel"
    if str(xq.ty.dtype) not in ("uint8", "int8"):
        return f"the input is {xq.ty.dtype}"
    return xq, np.float32(sx.reshape(())), int(zx.reshape(()))


def _weight_params(bindings, expr, axis_wanted: int):
    """(int8 weight, per-channel scales) of a constant dequantized weight, or a reason string."""
    dq = _dequantized(bindings, expr)
    if dq is None:
        return "its weight is float (not dequantized from int8)"
    wq, scale, zero, axis = dq
    w, sw, zw = _const(wq), _const(scale), _const(zero)
    if w is None or sw is None or zw is None:
        return "its second operand is not a constant"
    if w.dtype != np.int8:
        return f"its weight is {w.dtype}"
    if np.any(zw != 0):
        return "its weight has a nonzero zero point"
    channels = w.shape[axis_wanted % w.ndim]
    if sw.size == 1:
        sw = np.full(channels, sw.reshape(()), np.float32)
    elif axis % w.ndim != axis_wanted % w.ndim or sw.size != channels:
        return "its weight scales are not per output channel"
    return w, sw.astype(np.float32).reshape(-1)


def _match_anchor(bindings, call):
    """A partial _Plan for a conv2d/matmul call (bias zero, float output), or a reason string."""
    op = _op(call)
    if op == CONV:
        attrs = call.attrs
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW" or str(attrs.out_layout) not in ("NCHW", "None", ""):
            return "conv2d", "not in NCHW/OIHW layout"
        activation = _activation_params(bindings, call.args[0])
        if isinstance(activation, str):
            return "conv2d", activation
        weight = _weight_params(bindings, call.args[1], 0)
        if isinstance(weight, str):
            return "conv2d", weight
        kind = "conv2d"
    elif op == MATMUL:
        activation = _activation_params(bindings, call.args[0])
        if isinstance(activation, str):
            return "matmul", activation
        rhs = call.args[1]
        permuted = bindings.get(rhs)
        if _op(permuted) == "relax.permute_dims":
            axes = [int(a) for a in permuted.attrs.axes] if permuted.attrs.axes is not None else None
            if axes not in (None, [1, 0]):
                return "matmul", "its weight is permuted other than a transpose"
            weight = _weight_params(bindings, permuted.args[0], 0)
            if not isinstance(weight, str):
                weight = (np.ascontiguousarray(weight[0].T), weight[1])
        else:
            weight = _weight_params(bindings, rhs, -1)
            second = _activation_params(bindings, rhs) if isinstance(weight, str) else None
            if isinstance(second, tuple):
                xq, sx, zx = activation
                rq, sr, zr = second
                return _Plan("matmul", call, xq, zx, sx, None, np.array([sr], np.float32), np.zeros(1, np.int64),
                             None, rq, zr)
        if isinstance(weight, str):
            return "matmul", weight
        if weight[0].ndim != 2:
            return "matmul", "its weight is not a matrix"
        kind = "matmul"
    else:
        return None
    xq, sx, zx = activation
    w, sw = weight
    channels = w.shape[0] if kind == "conv2d" else w.shape[1]
    return _Plan(kind, call, xq, zx, sx, w, sw, np.zeros(channels, np.int64), None)


def _bias(bindings, expr, plan: _Plan) -> bool:
    """Folds `expr` (a dequantized int32 bias, maybe reshaped to [1, C, 1, 1]) into plan.bias when its scale is
    sx * sw (what effc's int8 pass writes); False otherwise."""
    value = bindings.get(expr)
    if _op(value) == "relax.reshape":
        expr = value.args[0]
    dq = _dequantized(bindings, expr)
    if dq is None or plan.rhs is not None:
        return False
    bq, scale, zero = _const(dq[0]), _const(dq[1]), _const(dq[2])
    if bq is None or scale is None or zero is None or bq.dtype != np.int32 or np.any(zero != 0):
        return False
    expected = (np.float64(plan.sx) * plan.sw.astype(np.float64)).astype(np.float32)
    if bq.size != plan.bias.size or not np.allclose(scale.reshape(-1), expected, rtol=1e-6, atol=0):
        return False
    plan.bias = plan.bias + bq.reshape(-1).astype(np.int64)
    return True


def _clip_bound(bindings, expr) -> np.ndarray | None:
    """A constant clip bound, also as TVM's ONNX frontend writes it: where(isnan(c), inf, c)."""
    value = _const(expr)
    if value is not None:
        return value
    where = bindings.get(expr)
    if _op(where) != "relax.where":
        return None
    test = bindings.get(where.args[0])
    if _op(test) != "relax.isnan":
        return None
    tested, if_nan, otherwise = _const(test.args[0]), _const(where.args[1]), _const(where.args[2])
    if tested is None or if_nan is None or otherwise is None:
        return None
    return np.where(np.isnan(tested), if_nan, otherwise)


def _clip_bounds(bindings, value, uses):
    """(inner expr, lo, hi) for relu(x) or minimum(maximum(x, lo), hi) (either order, either bound), else None."""
    op = _op(value)
    if op == "relax.nn.relu":
        return value.args[0], 0.0, None
    lo, hi, current = None, None, value
    for _ in range(2):
        op = _op(current)
        if op not in ("relax.maximum", "relax.minimum"):
            break
        bound = _clip_bound(bindings, current.args[1])
        if bound is None or bound.size != 1:
            return None
        if op == "relax.maximum":
            lo = float(bound.reshape(()))
        else:
            hi = float(bound.reshape(()))
        inner = current.args[0]
        nxt = bindings.get(inner)
        if _op(nxt) in ("relax.maximum", "relax.minimum") and uses.get(inner, 0) == 1:
            current = nxt
            continue
        return inner, lo, hi
    return (current.args[0], lo, hi) if lo is not None or hi is not None else None


# Ops that commute with dequantize -> quantize at one scale and zero point: max picks the same element in either
# domain, the others only move elements; so Q(op(DQ(xq))) == op(xq) exactly.
ORDER_PRESERVING = ("relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims", "relax.squeeze",
                    "relax.expand_dims", "relax.flatten")


@dataclass
class _Passthrough:
    """Q(op(DQ(xq))) at one scale and zero point, rewritten as op(xq)."""

    call: object
    xq: object


def _passthrough(bindings, uses, value):
    inner = value.args[0]
    call = bindings.get(inner)
    if _op(call) not in ORDER_PRESERVING or uses.get(inner, 0) != 1:
        return None
    dq = _dequantized(bindings, call.args[0])
    if dq is None:
        return None
    same = [_const(a) for a in (value.args[1], dq[1], value.args[2], dq[2])]
    if any(v is None or v.size != 1 for v in same) or same[0] != same[1] or same[2] != same[3]:
        return None
    if str(dq[0].ty.dtype) != str(value.attrs.out_dtype):
        return None
    return _Passthrough(call, dq[0])


def _plan(bindings, uses, float_reason=None) -> tuple[dict, list[Island]]:
    """{var to replace: _Plan or _Passthrough} and one Island per conv2d/matmul."""
    plans: dict = {}
    claimed: set = set()

    def kept_float(plan: _Plan) -> str | None:
        return float_reason(plan.kind, plan.xq, plan.weight, plan.anchor.attrs) if float_reason is not None else None

    for var, value in bindings.items():
        if _op(value) != Q:
            continue
        passthrough = _passthrough(bindings, uses, value)
        if passthrough is not None:
            plans[var] = passthrough
            continue
        scale, zero = _const(value.args[1]), _const(value.args[2])
        if scale is None or zero is None or scale.size != 1 or zero.size != 1:
            continue
        inner, lo, hi = value.args[0], None, None
        clipped = _clip_bounds(bindings, bindings.get(inner), uses)
        if clipped is not None and uses.get(inner, 0) == 1:
            inner, lo, hi = clipped
        bias_expr = None
        added = bindings.get(inner)
        if _op(added) == "relax.add" and uses.get(inner, 0) == 1:
            inner, bias_expr = added.args
        anchor_value = bindings.get(inner)
        if uses.get(inner, 0) != 1:
            continue
        plan = _match_anchor(bindings, anchor_value)
        if not isinstance(plan, _Plan) or kept_float(plan):
            continue
        if bias_expr is not None and not _bias(bindings, bias_expr, plan):
            continue
        dtype = str(value.attrs.out_dtype)
        info = np.iinfo(np.dtype(dtype))
        sy, zy = np.float32(scale.reshape(())), int(zero.reshape(()))
        q_lo = info.min if lo is None else int(np.clip(np.round(np.float32(lo) / sy) + zy, info.min, info.max))
        q_hi = info.max if hi is None else int(np.clip(np.round(np.float32(hi) / sy) + zy, info.min, info.max))
        plan.out = {"scale": sy, "zero": zy, "dtype": dtype, "lo": q_lo, "hi": q_hi,
                    "epilogue": "+".join(["bias"] * (bias_expr is not None) + ["clip"] * (lo is not None or hi is not None))}
        plans[var] = plan
        claimed.add(inner)
    islands = []
    for var, value in bindings.items():
        if _op(value) not in (CONV, MATMUL):
            continue
        if var in claimed:
            plan = next(p for p in plans.values() if isinstance(p, _Plan) and p.anchor.same_as(value))
            epilogue = plan.out["epilogue"]
            islands.append(Island(plan.kind, _shape(value), True,
                                  f"{epilogue + ' -> ' if epilogue else ''}requantize to {plan.out['dtype']}"))
            continue
        plan = _match_anchor(bindings, value)
        reason = kept_float(plan) if isinstance(plan, _Plan) else None
        if reason:
            islands.append(Island(plan.kind, _shape(value), False, reason))
        elif isinstance(plan, _Plan):
            plans[var] = plan
            islands.append(Island(plan.kind, _shape(value), True, "int32 accumulation, float output (no quantize follows)"))
        else:
            kind, reason = plan
            islands.append(Island(kind, _shape(value), False, reason))
    return plans, islands


def _shape(call) -> str:
    shape = call.args[1].ty.shape
    try:
        return "x".join(str(int(d)) for d in shape.values)
    except (TypeError, ValueError, AttributeError):
        return "?"


# ---------------------------------------------------------------------------------------------------- rewrite


def _integer_island(plan: _Plan, xq, emit, conv_kernel=None, rq=None):
    """The integer Relax expression of one plan reading the rewritten `xq` (and `rq`, the rewritten second
    activation of a product of two); `emit` binds each intermediate;
    `conv_kernel(xq)` gives the int32 convolution (or None: Relax's conv2d), NCHW or a blocked.Blocked. Returns
    (expression, lanes of its blocks or None for NCHW)."""
    from tvm import relax

    from effc.backends.tvm.integer.blocked import Blocked, channel_constant

    op = relax.op
    w = plan.weight
    lanes = None
    if plan.kind == "conv2d":
        attrs = plan.anchor.attrs
        acc = conv_kernel(xq) if conv_kernel is not None else None
        if isinstance(acc, Blocked):
            lanes, acc = acc.lanes, acc.expr
        if acc is None:
            padding = [int(p) for p in attrs.padding]  # top, left, bottom, right
            data = xq
            if any(padding):
                widths = [0, 0, 0, 0, padding[0], padding[2], padding[1], padding[3]]
                data = emit(op.nn.pad(xq, widths, pad_value=float(plan.zx)))
            acc = op.nn.conv2d(data, relax.const(w), strides=[int(s) for s in attrs.strides], padding=[0, 0],
                               dilation=[int(d) for d in attrs.dilation], groups=int(attrs.groups), out_dtype="int32")
        acc = emit(acc)
        weight_sums = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
    elif plan.rhs is not None:  # (a - za) @ (b - zb) on int32: both corrections depend on the data
        lhs, rhs = (emit(op.astype(v, "int32")) for v in (xq, rq))
        lhs = emit(op.subtract(lhs, relax.const(np.int32(plan.zx)))) if plan.zx else lhs
        rhs = emit(op.subtract(rhs, relax.const(np.int32(plan.zr)))) if plan.zr else rhs
        acc = emit(op.matmul(lhs, rhs, out_dtype="int32"))
        weight_sums = np.zeros(1, np.int64)
        plan = dataclasses.replace(plan, zx=0)
    else:
        acc = emit(op.matmul(xq, relax.const(w), out_dtype="int32"))
        weight_sums = w.astype(np.int64).sum(axis=0)

    def per_channel(values: np.ndarray):
        if lanes is not None:
            return relax.const(channel_constant(values, lanes))
        return relax.const(values.reshape((1, -1, 1, 1) if plan.kind == "conv2d" else (-1,)))

    bias = plan.bias - plan.zx * weight_sums
    if np.any(bias):
        acc = emit(op.add(acc, per_channel(np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32))))
    real = emit(op.astype(acc, "float32"))
    if plan.out is None:  # ONNX Runtime's float output of an int8 product: float(acc) * (sx * sw)
        scale = (plan.sx * plan.sw).astype(np.float32)
        return op.multiply(real, per_channel(scale)), lanes
    out = plan.out
    multiplier = ((plan.sx * plan.sw).astype(np.float32) / out["scale"]).astype(np.float32)
    rounded = emit(op.round(emit(op.multiply(real, per_channel(multiplier)))))
    shifted = emit(op.add(rounded, relax.const(np.float32(out["zero"]))))
    clipped = emit(op.clip(shifted, out["lo"], out["hi"]))
    return op.astype(clipped, out["dtype"]), lanes


# Elementwise ops that work in any layout when every tensor operand has the same shape and the rest are scalars:
# a Q(...) of them over DQ'd blocked activations (a residual add, its ReLU) is computed on the blocks.
ELEMENTWISE = ("relax.add", "relax.subtract", "relax.multiply", "relax.maximum", "relax.minimum", "relax.nn.relu",
               "relax.clip")


def _scalar(expr) -> bool:
    """A scalar operand: a prim value (clip's bounds) or a tensor of one element."""
    import tvm

    if isinstance(expr, tvm.ir.Constant) and not isinstance(expr, tvm.ir.GenericConst):
        return True
    shape = getattr(expr.ty, "shape", None)
    try:
        return shape is not None and all(int(d) == 1 for d in shape.values)
    except (TypeError, ValueError, AttributeError):
        return False


def _rewriter_class():
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from effc.backends.tvm.integer.blocked import Blocked, emit_unpacked

    @mutator
    class Rewriter(PyExprMutator):
        def __init__(self, mod, plans, conv_kernel, blocked_kernel, bindings, uses):
            super().__init__(mod)
            self.plans, self.conv_kernel, self.blocked_kernel = plans, conv_kernel, blocked_kernel
            self.bindings, self.uses = bindings, uses
            self.blocked: dict = {}  # original var -> Blocked (of rewritten vars) where its value is also in blocks

        def emit(self, expr, name: str = ""):
            return self.builder_.emit(self.builder_.normalize(expr), name)

        def visit_var_binding_(self, binding):
            plan = self.plans.get(binding.var)
            if plan is None:
                blocked = self.blocked_elementwise(binding.value) if _op(binding.value) == Q else None
                if blocked is None:
                    return super().visit_var_binding_(binding)
                return self.bind(binding.var, blocked)
            from tvm import relax

            if isinstance(plan, _Passthrough):
                blocked = self.blocked_passthrough(plan)
                if blocked is not None:
                    return self.bind(binding.var, blocked)
                call = plan.call
                value = self.builder_.normalize(relax.Call(call.op, [self.visit_expr(plan.xq), *(self.visit_expr(a) for a in call.args[1:])], call.attrs))
                return self.bind(binding.var, value)
            rq = self.visit_expr(plan.rhs) if plan.rhs is not None else None
            value, lanes = _integer_island(plan, self.visit_expr(plan.xq), self.emit, self.kernel(plan), rq)
            if lanes is not None:
                channels = plan.weight.shape[0]
                return self.bind(binding.var, Blocked(self.emit(value, binding.var.name + "_blocked"), lanes, channels))
            self.bind(binding.var, self.builder_.normalize(value))

        def bind(self, var, value):
            """Binds `var` to `value`; a Blocked value is recorded, and `var` becomes its NCHW unpacking (kept only
            where something reads NCHW)."""
            from tvm import relax

            if isinstance(value, Blocked):
                self.blocked[var] = value
                value = self.builder_.normalize(emit_unpacked(self.builder_, value))
            kind = relax.DataflowVar if isinstance(var, relax.DataflowVar) else relax.Var
            new_var = kind(var.name, value.ty)
            self.builder_.emit_normalized(relax.VarBinding(new_var, value))
            self.set_var_remap(var, new_var)

        def kernel(self, plan):
            if plan.kind != "conv2d" or (self.conv_kernel is None and self.blocked_kernel is None):
                return None

            def convolve(xq):
                args = (plan.weight, plan.anchor.attrs, plan.zx)
                if self.blocked_kernel is not None:
                    result = self.blocked_kernel(self.builder_, self.blocked.get(plan.xq, xq), *args)
                    if result is None and plan.xq in self.blocked:
                        result = self.blocked_kernel(self.builder_, xq, *args)
                    if result is not None:
                        return result
                return self.conv_kernel(self.builder_, xq, *args) if self.conv_kernel is not None else None

            return convolve

        def blocked_passthrough(self, plan: _Passthrough):
            """max_pool2d of a blocked activation, on its blocks (padding with the dtype's minimum, as in NCHW)."""
            from tvm import relax

            source = self.blocked.get(plan.xq)
            call = plan.call
            if source is None or _op(call) != "relax.nn.max_pool2d" or str(call.attrs.layout) != "NCHW":
                return None
            attrs = call.attrs
            layout = f"NCHW{source.lanes}c"
            pooled = relax.op.nn.max_pool2d(source.expr, [int(p) for p in attrs.pool_size], [int(s) for s in attrs.strides],
                                            [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation],
                                            bool(attrs.ceil_mode), bool(attrs.count_include_pad), layout, layout)
            return Blocked(self.emit(pooled), source.lanes, source.channels)

        def blocked_elementwise(self, quantize):
            """Q(elementwise(DQ(a), DQ(b), scalars)) where every activation read is blocked, alike: on the blocks."""
            from tvm import relax

            sources: list = []

            def rebuild(expr):
                if _scalar(expr):
                    return self.visit_expr(expr)
                value = self.bindings.get(expr)
                op = _op(value)
                if op == DQ and all(_scalar(a) for a in value.args[1:]):
                    source = self.blocked.get(value.args[0])
                    if source is None:
                        return None
                    sources.append(source)
                    return relax.Call(value.op, [source.expr, *(self.visit_expr(a) for a in value.args[1:])], value.attrs)
                if op not in ELEMENTWISE or self.uses.get(expr, 0) != 1:
                    return None
                args = [rebuild(a) for a in value.args]
                return None if any(a is None for a in args) else relax.Call(value.op, args, value.attrs)

            if not all(_scalar(a) for a in quantize.args[1:]):
                return None
            inner = rebuild(quantize.args[0])
            if inner is None or not sources or len({(s.lanes, s.channels, str(s.expr.ty.shape)) for s in sources}) != 1:
                return None
            value = relax.Call(quantize.op, [inner, *(self.visit_expr(a) for a in quantize.args[1:])], quantize.attrs)
            return Blocked(self.emit(value), sources[0].lanes, sources[0].channels)

    return Rewriter
