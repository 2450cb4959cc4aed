"""Which tensor axes share one permutation: labels propagated over a torch.fx graph.

Every dimension of every tensor in the traced graph gets a **label**, a node of a
union-find. Two labels are joined when the network's function forces their units to
be permuted together: an elementwise op joins the axes it lines up (a residual add
joins the whole stream), a Linear/Conv joins its input's channel axis with its weight's
input axis and starts a new label for its output channels, a norm joins its weight,
bias and running statistics to the channel axis. The label :data:`FIXED` stands for
"may not be permuted": the network input's axes, the network output's, batch,
spatial and token axes, any axis of size 1 (Fixup's scalar biases and scales), an
axis that a reshape merges with another, a concatenated axis.

After the walk, each class of labels without :data:`FIXED` is one permutation group:
the parameter and buffer axes in it move together. timm's fused attention
(``qkv``/``proj``/``num_heads``) is kept as one leaf and reported to the caller, who
adds its head-structured groups (see :mod:`transferlens.analysis.permutation_groups`).

An op this walk does not know is refused (``UserInputError``, one line naming the
node and the module it is in): silently fixing it could break exactness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from transferlens.errors import UserInputError
from transferlens.evaluation import evaluation_mode

FIXED = 0
Labels = tuple[int, ...]

# Parameter-free leaf modules and functions that act on each element alone.
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)  # fmt: skip
POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
UNARY = {
    "relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "hardswish",
    "hardsigmoid", "mish", "dropout", "dropout1d", "dropout2d", "clone", "contiguous",
    "neg", "abs", "exp", "float", "to", "type_as", "detach", "sqrt", "rsqrt", "pow",
    "square", "erf", "softplus", "relu6", "softmax", "log_softmax",
}  # fmt: skip
BROADCAST = {"add", "iadd", "sub", "isub", "mul", "imul", "truediv", "itruediv", "div",
             "maximum", "minimum"}  # fmt: skip
POOLS = {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d",
         "max_pool2d", "avg_pool1d", "max_pool1d"}  # fmt: skip
REDUCTIONS = {"mean", "sum", "amax", "amin"}
NON_TENSOR = {"getattr", "eq", "ne", "lt", "gt", "le", "ge", "floordiv", "_assert", "size",
              "dim", "_assert_is_none", "numel"}  # fmt: skip


def is_fused_attention(module: nn.Module) -> bool:
    """timm's attention: a fused ``qkv`` Linear, a ``proj`` Linear and ``num_heads``."""
    return (
        isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "proj", None), nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
    )


class GroupTracer(fx.Tracer):
    """torch.fx's tracer, keeping fused attention modules (and torch.nn's) as leaves."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return is_fused_attention(module) or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` traced by :class:`GroupTracer`; one line naming the failure if it cannot be."""
    try:
        # In eval mode: code traced through (not a leaf) that reads ``self.training``
        # is frozen into the graph, and the graph serves eval-mode analyses.
        with evaluation_mode([model]):
            graph = GroupTracer().trace(model)
    except Exception as error:  # fx raises many kinds; the user needs the one line
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserInputError(
            f"align: torch.fx cannot trace {type(model).__name__} "
            f"({type(error).__name__}: {message})"
        ) from None
    return fx.GraphModule(model, graph)


def target_name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def module_of(node: fx.Node) -> str:
    """The module a node belongs to: its target for a module call, else the innermost
    module whose forward made it ('' at the top level)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    module = next(reversed(stack.values()), None) if stack else None
    return (module[0] if isinstance(module, tuple) else module) or ""


def node_place(node: fx.Node) -> str:
    """``node 'add_3' (add) in module 'layer1.0'``: where an unsupported op sits."""
    where = module_of(node)
    inside = f" in module {where!r}" if where else ""
    return f"node {node.name!r} ({node.op} {target_name(node)}){inside}"


@dataclass
class LabelGraph:
    """The union-find of labels and the parameter axes attached to them."""

    parent: list[int] = field(default_factory=lambda: [FIXED])
    axes: dict[tuple[str, int], int] = field(default_factory=dict)  # (state key, axis) -> label

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, label: int) -> int:
        root = label
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[label] != root:
            self.parent[label], label = root, self.parent[label]
        return root

    def union(self, *labels: int) -> int:
        roots = {self.find(label) for label in labels}
        # FIXED (0) is the smallest id, so a class containing it keeps it as its root.
        root = min(roots)
        for other in roots:
            self.parent[other] = root
        return root

    def axis(self, key: str, axis: int, size: int) -> int:
        """The label of axis ``axis`` of state entry ``key`` (FIXED when of size 1)."""
        if size == 1:
            return FIXED
        if (key, axis) not in self.axes:
            self.axes[(key, axis)] = self.new()
        return self.axes[(key, axis)]

    def tensor_axes(self, key: str, tensor: torch.Tensor) -> Labels:
        return tuple(self.axis(key, i, size) for i, size in enumerate(tensor.shape))


def reshape_labels(graph: LabelGraph, labels: Labels, old: tuple, new: tuple) -> Labels:
    """Labels after viewing shape ``old`` as ``new``: an axis kept whole (alone with
    size-1 axes in a run of equal products) keeps its label; axes that are merged or
    split are FIXED."""
    out: list[int] = [FIXED] * len(new)
    i = j = 0
    while i < len(old) or j < len(new):
        run_i, run_j = [i], [j]
        p, q = (old[i] if i < len(old) else 1), (new[j] if j < len(new) else 1)
        while p != q:
            if p < q:
                i += 1
                run_i.append(i)
                p *= old[i]
            else:
                j += 1
                run_j.append(j)
                q *= new[j]
        big_i = [k for k in run_i if k < len(old) and old[k] > 1]
        big_j = [k for k in run_j if k < len(new) and new[k] > 1]
        if len(big_i) == 1 and len(big_j) == 1:
            out[big_j[0]] = labels[big_i[0]]
        else:
            for k in big_i:
                graph.union(FIXED, labels[k])
        i, j = i + 1, j + 1
    return tuple(out)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def _dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


@dataclass
class Walk:
    """The label walk over one traced graph, with its example shapes (see the module docstring).

    After :meth:`run`: ``graph`` holds the union-find and the parameter axes, ``env``
    each node's labels (None for a non-tensor), ``attention`` the fused attention
    modules met (kept whole, their inner groups added by the caller).
    """

    gm: fx.GraphModule
    model_name: str
    graph: LabelGraph = field(default_factory=LabelGraph)
    env: dict[fx.Node, Labels | None] = field(default_factory=dict)
    from_params: set[fx.Node] = field(default_factory=set)
    attention: list[str] = field(default_factory=list)

    def run(self) -> LabelGraph:
        self.state = dict(self.gm.state_dict(keep_vars=True))
        for node in self.gm.graph.nodes:
            self.env[node] = self.visit(node)
            inputs = node.all_input_nodes
            if node.op == "get_attr" or (inputs and all(n in self.from_params for n in inputs)):
                self.from_params.add(node)
        return self.graph

    def activations(self) -> list[tuple[fx.Node, Labels]]:
        """Nodes computed from the input (not from parameters alone) with their labels."""
        return [
            (node, labels)
            for node, labels in self.env.items()
            if labels
            and node.op in ("call_module", "call_function", "call_method")
            and node not in self.from_params
        ]

    # -- helpers ---------------------------------------------------------------------

    def labels(self, arg: Any) -> Labels | None:
        return self.env.get(arg) if isinstance(arg, fx.Node) else None

    def refuse(self, node: fx.Node, why: str = "is not supported") -> UserInputError:
        return UserInputError(
            f"align: cannot derive the permutation groups of {self.model_name}: "
            f"{node_place(node)} {why}"
        )

    def join_entry(self, label: int, key: str, axis: int = 0) -> int:
        """``label`` joined with axis ``axis`` of state entry ``key`` (if it exists)."""
        if key not in self.state:
            return label
        return self.graph.union(label, self.graph.axis(key, axis, self.state[key].shape[axis]))

    def join_node(self, label: int, arg: Any, node: fx.Node, axis: int = 0) -> int:
        """``label`` joined with axis ``axis`` of a parameter node ``arg`` (None: no-op)."""
        if arg is None:
            return label
        labels = self.labels(arg)
        if labels is None or arg not in self.from_params:
            raise self.refuse(node, "takes a weight that is not a parameter")
        return self.graph.union(label, labels[axis])

    # -- the walk --------------------------------------------------------------------

    def visit(self, node: fx.Node) -> Labels | None:
        shape = _shape(node)
        if node.op == "placeholder":
            return tuple(FIXED for _ in shape) if shape is not None else None
        if node.op == "get_attr":
            value = self.state.get(node.target)
            if value is not None:
                return self.graph.tensor_axes(node.target, value)
            return tuple(FIXED for _ in shape) if shape is not None else None
        if node.op == "output":
            self._fix_outputs(node.args[0])
            return None
        inputs = [n for n in node.all_input_nodes if self.env.get(n)]
        if shape is None:
            if inputs and target_name(node) not in NON_TENSOR:
                raise self.refuse(node, "returns something other than one tensor")
            return None
        if not inputs:  # a constant made inside forward
            return tuple(FIXED for _ in shape)
        if node.op == "call_module":
            return self.module(node, self.gm.get_submodule(node.target), shape)
        return self.function(node, target_name(node), shape)

    def _fix_outputs(self, value: Any) -> None:
        if isinstance(value, fx.Node):
            for label in self.env.get(value) or ():
                self.graph.union(FIXED, label)
        elif isinstance(value, list | tuple):
            for item in value:
                self._fix_outputs(item)
        elif isinstance(value, dict):
            for item in value.values():
                self._fix_outputs(item)

    def module(self, node: fx.Node, module: nn.Module, shape: tuple) -> Labels:
        x = self.labels(node.args[0]) if node.args else None
        name = node.target
        if x is None:
            raise self.refuse(node, "has no tensor input")
        if is_fused_attention(module):
            return self.fused_attention(node, module, x)
        if isinstance(module, nn.Linear):
            self.join_entry(x[-1], f"{name}.weight", 1)
            out = self.join_entry(self.graph.axis(f"{name}.weight", 0, module.out_features),
                                  f"{name}.bias")  # fmt: skip
            return x[:-1] + (out,)
        if isinstance(module, nn.modules.conv._ConvNd):
            if module.transposed:
                raise self.refuse(node, "is a transposed convolution")
            keys = (f"{name}.weight", f"{name}.bias")
            return self.conv(node, x, shape, module.groups, *keys)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            keys = [f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            return self.channel(x, 1, keys)
        if isinstance(module, nn.LayerNorm):
            if len(module.normalized_shape) != 1:
                raise self.refuse(node, "normalises over more than one axis")
            return self.channel(x, len(x) - 1, [f"{name}.weight", f"{name}.bias"])
        if any(True for _ in module.parameters()):
            raise self.refuse(node, f"is a leaf module with parameters ({type(module).__name__})")
        if isinstance(module, ELEMENTWISE_MODULES):
            return x
        if isinstance(module, POOL_MODULES):
            return x[:2] + tuple(FIXED for _ in shape[2:])
        if isinstance(module, nn.Flatten):
            return reshape_labels(self.graph, x, _shape(node.args[0]), shape)
        raise self.refuse(node, f"is an unsupported module ({type(module).__name__})")

    def channel(self, x: Labels, dim: int, keys: list[str]) -> Labels:
        """A per-channel op (a norm): axis ``dim`` joined with axis 0 of each entry."""
        label = x[dim]
        for key in keys:
            label = self.join_entry(label, key)
        return x[:dim] + (label,) + x[dim + 1 :]

    def conv(self, node: fx.Node, x: Labels, shape: tuple, groups: int,
             weight: Any, bias: Any) -> Labels:  # fmt: skip
        """A convolution; ``weight``/``bias`` are state keys (modules) or parameter nodes."""
        join = self.join_entry if isinstance(weight, str) else (
            lambda label, arg, axis=0: self.join_node(label, arg, node, axis))  # fmt: skip
        w_shape = self.state[weight].shape if isinstance(weight, str) else _shape(weight)
        if not isinstance(weight, str):  # the kernel's spatial axes are not units
            for axis in range(2, len(w_shape)):
                self.join_node(FIXED, weight, node, axis)
        if groups == 1:
            join(x[1], weight, 1)
            out = join(self.graph.new(), weight, 0)
        elif groups == w_shape[0] == x_channels(node):
            # depthwise: output channel i reads input channel i alone: one label
            out = join(x[1], weight, 0)
        else:
            raise self.refuse(node, f"is a grouped convolution (groups={groups})")
        if bias is not None:
            out = join(out, bias, 0)
        return (x[0], out) + tuple(FIXED for _ in shape[2:])

    def fused_attention(self, node: fx.Node, module: nn.Module, x: Labels) -> Labels:
        name = node.target
        allowed = {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
        extra = [k for k, _ in module.named_parameters() if k not in allowed]
        if extra:
            raise self.refuse(
                node, f"is attention with a parameter align cannot permute ({extra[0]})"
            )
        if module.qkv.out_features != 3 * module.proj.in_features:
            raise self.refuse(node, "is attention whose qkv is not 3 x its output width")
        self.join_entry(x[-1], f"{name}.qkv.weight", 1)
        out = self.graph.axis(f"{name}.proj.weight", 0, module.proj.out_features)
        out = self.join_entry(out, f"{name}.proj.bias")
        self.attention.append(name)
        return x[:-1] + (out,)

    def function(self, node: fx.Node, name: str, shape: tuple) -> Labels:
        x = self.labels(node.args[0]) if node.args else None
        if name in UNARY and x is not None:
            return x
        if name in BROADCAST:
            return self.broadcast(node, shape)
        if x is None and name != "cat":
            raise self.refuse(node, "does not take a tensor first")
        if name in ("flatten", "reshape", "view", "squeeze", "unsqueeze", "unflatten"):
            return reshape_labels(self.graph, x, _shape(node.args[0]), shape)
        if name == "permute":
            dims = (
                node.args[1] if isinstance(_arg(node, 1, "dims"), list | tuple) else node.args[1:]
            )
            return tuple(x[_dim(d, len(x))] for d in dims)
        if name == "transpose":
            d0, d1 = _dim(node.args[1], len(x)), _dim(node.args[2], len(x))
            out = list(x)
            out[d0], out[d1] = x[d1], x[d0]
            return tuple(out)
        if name == "expand":
            old = _shape(node.args[0])
            pad = len(shape) - len(old)
            return tuple(
                FIXED if k < pad or (old[k - pad] == 1 and shape[k] != 1) else x[k - pad]
                for k in range(len(shape))
            )
        if name == "getitem":
            return self.getitem(node, x, node.args[1])
        if name == "cat":
            return self.cat(node, shape)
        if name in REDUCTIONS:
            return self.reduce(node, x, shape)
        if name in POOLS:
            return x[:2] + tuple(FIXED for _ in shape[2:])
        if name == "layer_norm":
            if len(_arg(node, 1, "normalized_shape")) != 1:
                raise self.refuse(node, "normalises over more than one axis")
            label = x[-1]
            for index, key in ((2, "weight"), (3, "bias")):
                label = self.join_node(label, _arg(node, index, key), node)
            return x[:-1] + (label,)
        if name == "batch_norm":
            label = x[1]
            for index, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
                label = self.join_node(label, _arg(node, index, key), node)
            return x[:1] + (label,) + x[2:]
        if name == "linear":
            weight, bias = _arg(node, 1, "weight"), _arg(node, 2, "bias")
            self.join_node(x[-1], weight, node, 1)
            out = self.join_node(self.graph.new(), weight, node, 0)
            return x[:-1] + (self.join_node(out, bias, node),)
        if name in ("conv1d", "conv2d", "conv3d"):
            weight, bias = _arg(node, 1, "weight"), _arg(node, 2, "bias")
            return self.conv(node, x, shape, _arg(node, 6, "groups", 1), weight, bias)
        raise self.refuse(node)

    def broadcast(self, node: fx.Node, shape: tuple) -> Labels:
        """Elementwise with broadcasting: the axes lined up from the right are joined."""
        out: list[int] = []
        args = [a for a in node.args if isinstance(a, fx.Node) and self.env.get(a)]
        for k in range(len(shape)):
            joined = []
            for arg in args:
                in_shape = _shape(arg)
                j = len(in_shape) - (len(shape) - k)
                if j >= 0 and in_shape[j] == shape[k]:
                    joined.append(self.env[arg][j])
            out.append(self.graph.union(*joined) if joined else FIXED)
        return tuple(out)

    def getitem(self, node: fx.Node, x: Labels, index: Any) -> Labels:
        index = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, fx.Node) or not isinstance(i, int | slice | type(None) | type(...))
               for i in index):  # fmt: skip
            raise self.refuse(node, "indexes by a tensor")
        if Ellipsis in index:
            at = index.index(Ellipsis)
            used = sum(1 for i in index if i is not None and i is not Ellipsis)
            index = index[:at] + (slice(None),) * (len(x) - used) + index[at + 1 :]
        out, dim = [], 0
        for item in index:
            if item is None:
                out.append(FIXED)
                continue
            if isinstance(item, int) or item != slice(None):
                self.graph.union(FIXED, x[dim])  # a subset of units: they stay
            if not isinstance(item, int):
                out.append(x[dim])
            dim += 1
        return tuple(out) + x[dim:]

    def cat(self, node: fx.Node, shape: tuple) -> Labels:
        tensors = [t for t in _arg(node, 0, "tensors") if isinstance(t, fx.Node)]
        dim = _dim(_arg(node, 1, "dim", 0), len(shape))
        out = []
        for k in range(len(shape)):
            labels = [self.env[t][k] for t in tensors if self.env.get(t)]
            out.append(self.graph.union(FIXED, *labels) if k == dim else self.graph.union(*labels))
        return tuple(out)

    def reduce(self, node: fx.Node, x: Labels, shape: tuple) -> Labels:
        dims = _arg(node, 1, "dim")
        if dims is None:
            return tuple(FIXED for _ in shape)
        dims = {_dim(d, len(x)) for d in (dims if isinstance(dims, list | tuple) else [dims])}
        if _arg(node, 2, "keepdim", False):
            return tuple(FIXED if k in dims else label for k, label in enumerate(x))
        return tuple(label for k, label in enumerate(x) if k not in dims)


def x_channels(node: fx.Node) -> int:
    return (_shape(node.args[0]) or (0, 0))[1]


def propagate_shapes(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Record every node's output shape (``node.meta['tensor_meta']``) for ``example``."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(example)


def walk(model: nn.Module, example: torch.Tensor) -> Walk:
    """Trace ``model``, run ``example`` through it for shapes, and propagate the labels."""
    gm = trace(model)
    flags = [m.training for m in gm.modules()]
    gm.eval()
    try:
        propagate_shapes(gm, example)
    except UserInputError:
        raise
    except Exception as error:
        raise UserInputError(
            f"align: {type(model).__name__} fails on an example input of shape "
            f"{tuple(example.shape)} ({type(error).__name__}); pass example_input="
        ) from None
    finally:
        for module, flag in zip(gm.modules(), flags):
            module.training = flag
    result = Walk(gm, type(model).__name__)
    result.run()
    return result
