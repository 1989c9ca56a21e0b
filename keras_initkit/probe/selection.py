"""Which layers a probe watches, and what kind of activation each one ends with.

Layer selection lives here once: the monitors, `diagnose`, `lsuv_init` and
`recalibrate_batchnorm` all ask these functions.
"""

import dataclasses

import keras

from keras_initkit._keras_private import sublayers
from keras_initkit.probe.attention import is_attention
from keras_initkit.probe.intercept import KERNEL_LAYERS, has_activation, own_activation

# Bounded activations and their (low, high) asymptotes.
BOUNDED = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
}
# Rectifiers: output <= 0 exactly when the pre-activation is <= 0. "dead" for the
# ones whose negative side is flat zero, "inactive" for the leaky variants.
RECTIFIERS = {
    "relu": "dead",
    "relu6": "dead",
    "leaky_relu": "inactive",
    "elu": "inactive",
    "selu": "inactive",
    "prelu": "inactive",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Site:
    """A watched layer: its display name and what its output is.

    Attributes:
        layer: the Keras layer.
        name: unique display name (see `site_names`): the layer's name, prefixed
            with its enclosing layers' names where the model has other layers of
            that name (`"encoder_1/attention/query"`).
        activation: canonical name of the activation the layer's output ends with,
            or `None` for a linear output.
        kind: `"bounded"`, `"dead"`, `"inactive"`, `"recurrent"` (a `keras.layers.RNN`:
            SimpleRNN, LSTM, GRU, `RNN(cell)`), `"attention"` (a `MultiHeadAttention`,
            `GroupQueryAttention`, `Attention` or `AdditiveAttention`, or subclass) or
            `None` (not judged).
        channel_axis: the unit axis of the output (last axis, or 1 for
            `channels_first` layers and the layers they feed: `channel_axes`).
        role: `"attention_scores"` for the query and key projections of an
            attention layer (they only shape the attention scores),
            `"attention_weights"` for its softmax (the attention probabilities: the
            attention layer's site measures their entropy), else `None`.
        gate: the layer with a learned scale (a normalization's `gamma`, a
            LayerScale, a kernel layer) that closes the residual branch this layer
            runs in, in a functional graph (`residual_gates`); `None` outside one.
            `keras_initkit.checks.gradients.branch_scale` reads its scale.
        closes_branch: this layer is the gate of some residual branch.
        normalized: in a functional graph, the layer's output runs only into
            normalization layers (`normalized_outputs`): its scale is normalized away.
        unused: in a functional graph, no path runs from the layer's output to the
            model's outputs (`unused_layers`): the loss does not depend on it.
        heads: the output heads the layer's output reaches (`output_heads`: the kernel
            layers nearest to the model's outputs, the layer itself if it is one), or
            None where the graph cannot tell (a subclassed model, custom blocks).
    """

    layer: keras.layers.Layer
    name: str
    activation: str | None
    kind: str | None
    channel_axis: int
    role: str | None = None
    gate: keras.layers.Layer | None = None
    closes_branch: bool = False
    normalized: bool = False
    unused: bool = False
    heads: frozenset | None = None

    @property
    def bounds(self):
        return BOUNDED.get(self.activation)

    @property
    def is_batchnorm(self):
        return isinstance(self.layer, keras.layers.BatchNormalization)

    @property
    def has_kernel(self):
        return getattr(self.layer, "kernel", None) is not None or isinstance(
            self.layer, KERNEL_LAYERS
        )


def activation_name(layer):
    """Canonical activation name a layer's output ends with, or None if linear."""
    if isinstance(layer, keras.layers.ReLU):
        if layer.negative_slope:
            return "leaky_relu"
        return "relu6" if layer.max_value == 6 else "relu"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, keras.layers.ELU):
        return "elu"
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if has_activation(layer) or _leaf_activation(layer):
        fn = layer.activation
        return getattr(fn, "__name__", type(fn).__name__)
    return None


def _leaf_activation(layer):
    """True for a custom layer without sublayers that holds a non-linear `activation`:
    taken to end with it, as Keras' own layers do. Only its classification rests on
    that: the probe measures its output as its own `call` computes it (see
    `has_activation`). A layer with sublayers (a block such as keras_hub's
    TransformerEncoder) usually hands its `activation` to them."""
    if own_activation(layer) is None:
        return False
    if isinstance(layer, keras.layers.RNN) or hasattr(layer, "state_size"):
        return False
    return not sublayers(layer, recursive=False)


def all_layers(model):
    """Every layer inside `model`, nested models and custom blocks included, depth
    first in tracking order: a nested `Sequential([a, b, c])` lists `a, b, c`, where
    Keras' recursive `_flatten_layers` lists `c, b, a`."""
    found, seen = [], set()

    def visit(parent):
        for layer in sublayers(parent, recursive=False):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if not isinstance(layer, keras.layers.InputLayer):
                found.append(layer)
            visit(layer)

    visit(model)
    return found


def interleave(model, sites, extra, called=None):
    """`sites` (in the order the forward pass ran them) with each of `extra` (layers
    measured for their gradient only: a LayerNorm, a LayerScale, an embedding) placed
    among them, not after the head: before the first site called after it, where
    `called` (layer names in the order of first calls, the gradient probe's) lists
    it, else after the site that precedes it in the model's layer order
    (`all_layers`). Inside a custom block the layer order is the order its sublayers
    were created in: keras_hub's pre-norm GPT2 creates its attention before the
    LayerNorm it calls first."""
    tracked = {id(layer): i for i, layer in enumerate(all_layers(model))}
    where = [tracked.get(id(s.layer), -1) for s in sites]
    position = {name: i for i, name in enumerate(called or ())}
    at = [position.get(s.name) for s in sites]
    after = {}
    for site in extra:
        if site.name in position:
            rank = position[site.name]
            following = [k for k, p in enumerate(at) if p is not None and p > rank]
            after.setdefault(min(following, default=len(sites)) - 1, []).append(site)
            continue
        rank = tracked.get(id(site.layer), len(tracked))
        before = [k for k, w in enumerate(where) if w < rank]
        after.setdefault(max(before, key=where.__getitem__, default=-1), []).append(site)
    merged = after.get(-1, [])
    for k, site in enumerate(sites):
        merged += [site, *after.get(k, [])]
    return merged


def _leaf(layer):
    return not isinstance(layer, keras.Model)


def _inside_recurrence(model):
    """Ids of the layers that run inside a recurrent layer's loop (its cell and below):
    their calls cannot be measured from outside the loop."""
    return {
        id(sub)
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.RNN)
        for sub in sublayers(layer)
    }


def _parents(model):
    """`{id(layer): the layer (or model) that tracks it}`, the first one found."""
    parents = {}
    for parent in [model, *all_layers(model)]:
        for child in sublayers(parent, recursive=False):
            parents.setdefault(id(child), parent)
    return parents


def site_names(model, layers):
    """Unique display names of `layers` (layer objects of `model`), in order.

    A layer's name, prefixed with as many enclosing layers' names as it takes to tell
    it apart from every other layer of the model (selected or not, so that a layer's
    name does not depend on the selection): the query projections of two Transformer
    blocks are `"encoder/attention/query"` and `"encoder_1/attention/query"`, a lone
    `Dense` stays `"dense"`. Layers that still share a name (two sublayers of one
    layer given the same name) get `"#2"`, `"#3"`, ... in tracking order.
    """
    parents = _parents(model)
    every = all_layers(model)
    known = {id(layer) for layer in every}
    every += [layer for layer in layers if id(layer) not in known]

    def ancestry(layer):
        names, seen = [], set()
        while layer is not None and layer is not model and id(layer) not in seen:
            seen.add(id(layer))
            names.append(layer.name)
            layer = parents.get(id(layer))
        return names

    chains = {id(layer): ancestry(layer) for layer in every}
    depth = dict.fromkeys(chains, 1)

    def label(layer):
        return "/".join(reversed(chains[id(layer)][: depth[id(layer)]]))

    def collisions():
        groups = {}
        for layer in every:
            groups.setdefault(label(layer), []).append(layer)
        return [group for group in groups.values() if len(group) > 1]

    deepened = True
    while deepened:  # every round deepens some label; depths are bounded
        deepened = False
        for group in collisions():
            for layer in group:
                if depth[id(layer)] < len(chains[id(layer)]):
                    depth[id(layer)] += 1
                    deepened = True
    names = {id(layer): label(layer) for layer in every}
    taken = set(names.values())
    for group in collisions():
        for k, layer in enumerate(group[1:], start=2):
            while f"{label(layer)}#{k}" in taken:
                k += 1
            names[id(layer)] = f"{label(layer)}#{k}"
            taken.add(names[id(layer)])
    return [names[id(layer)] for layer in layers]


def make_sites(model, layers):
    """Build `Site`s for `layers` (layer objects of `model`), named by `site_names`."""
    parents = _parents(model)
    gates = residual_gates(model)
    closing = {id(gate) for gate in gates.values()}
    normalized = normalized_outputs(model)
    unused = unused_layers(model)
    heads = output_heads(model)
    axes = channel_axes(layers)
    sites = []
    for layer, name in zip(layers, site_names(model, layers)):
        parent = parents.get(id(layer))
        act = activation_name(layer)
        if isinstance(layer, keras.layers.RNN):
            kind = "recurrent"
        elif is_attention(layer):
            kind = "attention"
        elif act in BOUNDED:
            kind = "bounded"
        else:
            kind = RECTIFIERS.get(act)
        role = _attention_role(layer, parent)
        axis = axes.get(id(layer), -1)
        gate, closes = gates.get(id(layer)), id(layer) in closing
        site = Site(
            layer,
            name,
            act,
            kind,
            axis,
            role,
            gate,
            closes,
            id(layer) in normalized,
            id(layer) in unused,
            None if heads is None else heads.get(id(layer), frozenset()),
        )
        sites.append(site)
    return sites


def _declared_axis(layer):
    """The unit axis `layer` states for its output: 1 for a `channels_first` layer, a
    batch or group normalization's `axis`, -1 for any other layer with a `data_format`
    or weights (a Dense layer's units are its last axis whatever it is fed) and for one
    that moves axes (`Permute`, `Reshape`); None for a layer that states none (an
    activation, a `PReLU`, a dropout, an addition, a concatenation)."""
    data_format = getattr(layer, "data_format", None)
    if data_format is not None:
        return 1 if data_format == "channels_first" else -1
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.GroupNormalization)):
        return layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    if isinstance(layer, keras.layers.PReLU):  # its weights follow its input's layout
        return None
    if getattr(layer, "weights", None) or isinstance(
        layer, (keras.layers.Permute, keras.layers.Reshape)
    ):
        return -1
    return None


def _producer(tensor):
    """The layer that computed the symbolic `tensor`, through nested functional and
    Sequential models to the layer inside that computed it; None for a model input."""
    history = getattr(tensor, "_keras_history", None)
    while history is not None:
        operation, _, index = history
        graph = _graph_of(operation)
        if graph is None:
            return operation
        output = keras.tree.flatten(graph._outputs_struct)[index]
        history = getattr(output, "_keras_history", None)
    return None


def channel_axes(layers):
    """`{id(layer): unit axis of its output}` for `layers`.

    A layer that states no layout (`_declared_axis`: a standalone `ReLU`, `Dropout`,
    `Add`, `Concatenate`) takes that of the layer whose output it receives (its first
    input), where its every call keeps that output's rank: a `ReLU` after a
    `channels_first` convolution, a batch norm of `axis=1` or a concatenation of their
    outputs counts its units on axis 1, as they do. Read off the calls Keras
    recorded (functional and Sequential models); elsewhere, and where the calls
    disagree, the last axis.
    """
    axes = {}

    def axis_of(layer):
        chain = []
        while id(layer) not in axes:
            declared = _declared_axis(layer)
            if declared is not None:
                axes[id(layer)] = declared
                break
            chain.append(layer)
            axes[id(layer)] = -1  # until resolved: a cycle ends here
            sources = set()
            for node in getattr(layer, "_inbound_nodes", []):
                inputs, outputs = node.arguments.keras_tensors, node.outputs
                same = inputs and all(len(o.shape) == len(inputs[0].shape) for o in outputs)
                sources.add(_producer(inputs[0]) if same else None)
            if len(sources) != 1 or None in sources:
                break
            layer = sources.pop()
        resolved = axes[id(layer)]
        for link in chain:
            axes[id(link)] = resolved
        return resolved

    return {id(layer): axis_of(layer) for layer in layers}


# Layers whose output does not depend on their input's scale (per sample, channel or
# group: batch norm in training, as the probe runs it).
_NORMALIZATIONS = tuple(
    cls
    for cls in (
        keras.layers.BatchNormalization,
        keras.layers.LayerNormalization,
        keras.layers.GroupNormalization,
        keras.layers.UnitNormalization,
        getattr(keras.layers, "RMSNormalization", None),
    )
    if cls is not None
)


def _graph_consumers(model):
    """`(nodes, {id(node): consumer nodes})` for each functional graph of `model` (its
    own and nested functional models')."""
    for graph in [model, *all_layers(model)]:
        by_depth = getattr(graph, "_nodes_by_depth", None)
        if not isinstance(graph, keras.Model) or not by_depth:
            continue
        nodes = [node for level in by_depth.values() for node in level]
        consumers = {}
        for node in nodes:
            for parent in node.parent_nodes:
                consumers.setdefault(id(parent), []).append(node)
        yield nodes, consumers


def shared_layers(model):
    """`{id(layer): number of calls}` of the layers `model`'s functional graphs call more
    than once, and of the layers inside them (a siamese tower called on two inputs, a
    block applied twice)."""
    calls, operations = {}, {}
    for nodes, _ in _graph_consumers(model):
        for node in nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
            operations[id(node.operation)] = node.operation
    shared = {key: count for key, count in calls.items() if count > 1}
    for key, count in list(shared.items()):
        if isinstance(operations[key], keras.layers.Layer):
            for sub in sublayers(operations[key]):
                shared[id(sub)] = max(count, shared.get(id(sub), 0))
    return shared


def normalized_outputs(model):
    """`{id(layer)}` of the layers of `model`'s functional graphs whose every call's
    output runs only into normalization layers (NASNet's separable convs, each straight
    into a batch norm): how large that output is changes nothing downstream. A layer
    whose output leaves its graph, or also feeds anything else, is absent; so are the
    layers of subclassed models (no graph to read)."""
    verdicts = {}
    for nodes, consumers in _graph_consumers(model):
        for node in nodes:
            after = consumers.get(id(node), [])
            normalized = bool(after) and all(
                isinstance(n.operation, _NORMALIZATIONS) for n in after
            )
            verdicts.setdefault(id(node.operation), []).append(normalized)
    return {key for key, calls in verdicts.items() if all(calls)}


def unused_layers(model):
    """`{id(layer)}` of the layers no path connects to `model`'s outputs: a functional
    graph's layers that none of the outputs it must compute depend on (BERT's
    `pooled_dense` under a token-level head on `sequence_output`), and every layer
    inside them. Read off the functional graphs, from the model's outputs back, into
    a nested functional model through the outputs used of it; a layer of a subclassed
    model or custom block (no graph to read) counts as used wherever its block is.
    A model that is not functional has none."""
    if not getattr(model, "_nodes_by_depth", None):
        return set()
    reached = set()
    walked = set()  # (id(nested functional model), flat output index) already followed

    def walk(graph, indices):
        outputs = keras.tree.flatten(graph._outputs_struct)
        stack = [outputs[i] for i in indices]
        seen = set()
        while stack:
            history = getattr(stack.pop(), "_keras_history", None)
            if history is None:
                continue
            operation, node_index, tensor_index = history
            reached.add(id(operation))
            if getattr(operation, "_nodes_by_depth", None):  # into the output used
                if (id(operation), tensor_index) not in walked:
                    walked.add((id(operation), tensor_index))
                    walk(operation, [tensor_index])
            node = operation._inbound_nodes[node_index]
            if id(node) not in seen:
                seen.add(id(node))
                stack.extend(node.arguments.keras_tensors)

    walk(model, range(len(keras.tree.flatten(model._outputs_struct))))
    unused = set()
    for nodes, _ in _graph_consumers(model):
        for node in nodes:
            operation = node.operation
            if id(operation) not in reached and isinstance(operation, keras.layers.Layer):
                unused.add(id(operation))
                unused.update(id(sub) for sub in sublayers(operation))
    return unused


def _has_kernel(layer):
    return getattr(layer, "kernel", None) is not None or isinstance(layer, KERNEL_LAYERS)


def output_heads(model):
    """`{id(layer): frozenset of head layers its output reaches}` for the layers of
    `model`'s functional graph, or None where the graph cannot tell.

    A head is a kernel layer nearest to one of the model's outputs: walking back from
    the output through layers without weights (activations, reshapes, additions), into
    a nested functional or Sequential model whose output it is (a head built as its own
    `Sequential`), to the first kernel layer on each path. A two-headed model (a
    classifier and a regressor on one trunk) has two; the trunk reaches both, each head
    only itself. The layers of a nested layer or model reach what it reaches. None for
    a model that is not functional or Sequential, and where a walk from an output meets,
    before a kernel layer, a layer with weights that is no kernel layer (a custom block,
    a normalization at the output): which of its own layers is last is not in the graph.
    """
    graph = _graph_of(model)
    if graph is None:
        return None
    heads = _heads(keras.tree.flatten(graph._outputs_struct))
    if heads is None:
        return None
    reaches = {}
    for head, upstream in heads:
        reaches.setdefault(id(head), set()).add(head)
        for layer in upstream:
            inside = sublayers(layer) if isinstance(layer, keras.layers.Layer) else []
            for key in (id(layer), *(id(sub) for sub in inside)):
                reaches.setdefault(key, set()).add(head)
    return {key: frozenset(found) for key, found in reaches.items()}


def _graph_of(operation):
    """The functional graph of a functional or Sequential model (a Sequential's is its
    `_functional`), else None."""
    graph = getattr(operation, "_functional", None) or operation
    return graph if getattr(graph, "_nodes_by_depth", None) else None


def _heads(tensors):
    """`[(head, layers upstream of it)]` behind the symbolic `tensors` (`output_heads`),
    or None where a layer with weights that is no kernel layer comes first."""
    found = []
    for operation, node_index, index in _producers(tensors):
        feeding = _upstream(operation._inbound_nodes[node_index].arguments.keras_tensors)
        if (graph := _graph_of(operation)) is not None:
            inner = _heads([keras.tree.flatten(graph._outputs_struct)[index]])
            if inner is None:
                return None
            found.extend((head, [*upstream, *feeding]) for head, upstream in inner)
        elif _has_kernel(operation):
            found.append((operation, feeding))
        else:
            return None  # a block with weights: its last layer is hidden
    return found


def _walk_back(tensors, stop=None):
    """`(operation, node index, output index, stopped)` of each call behind the
    symbolic `tensors`, once each, walking back through its inputs unless
    `stop(operation)` (then `stopped`); a nested model is one operation (the walk goes
    on from what it was called on)."""
    stack, seen = list(tensors), set()
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        if history is None:
            continue
        operation, node_index, index = history
        if (id(operation), node_index) in seen:
            continue
        seen.add((id(operation), node_index))
        stopped = stop is not None and stop(operation)
        yield operation, node_index, index, stopped
        if not stopped:
            stack.extend(operation._inbound_nodes[node_index].arguments.keras_tensors)


def _producers(tensors):
    """`(operation, node index, output index)` of the nearest layers with weights or
    nested models behind the symbolic `tensors`, walking back through weightless
    layers."""

    def weighted_or_nested(operation):
        return bool(getattr(operation, "weights", None) or _graph_of(operation) is not None)

    walk = _walk_back(tensors, weighted_or_nested)
    return [(op, node, index) for op, node, index, stopped in walk if stopped]


def _upstream(tensors):
    """Every layer whose output reaches the symbolic `tensors`, in this graph."""
    return list({id(op): op for op, _, _, _ in _walk_back(tensors)}.values())


def residual_gates(model):
    """`{id(layer): gate}` for the layers of `model`'s functional graphs (its own and
    nested functional models') whose output runs, through single-input layers and
    without branching, into a residual `Add` (`keras.layers.Add` or `x + y`), past a
    layer with a learned scale (`scale_of`): the gate is the last such layer before
    the add, the one that closes the branch. ConvNeXt's `pointwise_conv_2` ->
    `layer_scale` -> `+`; ResNet's `conv2` -> ... -> `bn3` -> `add`. Layers outside
    such a branch are absent; so is a layer called several times unless every call
    runs into the same gate."""
    gates = {}
    for nodes, consumers in _graph_consumers(model):
        found = {}
        for node in nodes:
            found.setdefault(id(node.operation), []).append(_gate(node, consumers))
        for key, gate in found.items():
            if gate[0] is not None and all(g is gate[0] for g in gate):
                gates[key] = gate[0]
    return gates


def _gate(node, consumers):
    """The gate of `node`'s operation (`residual_gates`), or None."""
    gate = None
    while True:
        after = consumers.get(id(node), [])
        if len(after) != 1:
            return None
        node = after[0]
        if len(node.parent_nodes) > 1 or len(node.arguments.keras_tensors) > 1:
            return gate if _is_add(node.operation) else None
        if scale_of(node.operation) is not None:
            gate = node.operation


def _is_add(operation):
    return isinstance(operation, keras.layers.Add) or type(operation).__name__ == "Add"


def scale_of(layer):
    """The variable of `layer` that scales its output, or None: a kernel layer's
    kernel, a normalization's `gamma` (None with `scale=False`), a LayerScale's only
    weight (a layer whose class name ends in `Scale`, holding one trainable variable)."""
    if not isinstance(layer, keras.layers.Layer):
        return None
    kernel = getattr(layer, "kernel", None)
    if kernel is not None:
        return kernel
    gamma = getattr(layer, "gamma", None)
    if isinstance(gamma, keras.Variable):
        return gamma
    weights = layer.trainable_weights
    if type(layer).__name__.endswith("Scale") and len(weights) == 1:
        return weights[0]
    return None


def _attention_role(layer, parent):
    """`"attention_scores"` for the query or key projection of an attention layer,
    `"attention_weights"` for its softmax, else None."""
    if parent is None or not is_attention(parent):
        return None
    projections = ("query_dense", "key_dense", "_query_dense", "_key_dense")  # keras_hub: _
    if any(layer is getattr(parent, name, None) for name in projections):
        return "attention_scores"
    return "attention_weights" if isinstance(layer, keras.layers.Softmax) else None


def resolve_layers(model, layers=None, *, where=None, argument="layers"):
    """Resolve `layers` (names or layer objects, or None for all) to layer objects.

    A name is a display name (`site_names`: `"encoder_1/attention/query"`) or a
    layer's own name where only one layer has it. `where(layer) -> bool` filters the
    default selection. Unknown and ambiguous names raise `ValueError` listing what is
    available.
    """
    looped = _inside_recurrence(model)
    candidates = [layer for layer in all_layers(model) if _leaf(layer) and id(layer) not in looped]
    if layers is None:
        return [layer for layer in candidates if where is None or where(layer)]
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    ids = {id(layer) for layer in candidates}
    names = site_names(model, candidates) if any(isinstance(i, str) for i in layers) else None
    chosen = []
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            if id(item) not in ids:
                raise ValueError(
                    f"Argument `{argument}` names a layer that is not part of the "
                    f"model. Received: {argument} containing layer '{item.name}'"
                )
            chosen.extend(_unwrapped(item))
        elif isinstance(item, str):
            chosen.extend(_unwrapped(named_layer(model, candidates, item, argument, names=names)))
        else:
            raise ValueError(
                f"Argument `{argument}` must contain layer names or layer objects. "
                f"Received: {item!r} of type {type(item).__name__}"
            )
    return chosen


def _unwrapped(layer):
    """What a wrapper's call runs, and the probe measures: `Bidirectional`'s two
    directions, a `Wrapper`'s (`TimeDistributed`'s) layer; any other layer itself.
    `layers=None` selects the same inner layers."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, keras.layers.Wrapper):
        return _unwrapped(layer.layer)
    return [layer]


def named_layer(model, candidates, name, argument="layers", what="layers of the model", names=None):
    """The layer of `candidates` (layers of `model`) that `name` names: its display
    name (`site_names`) or its own name where no other candidate has it. `names`: the
    candidates' `site_names`, when the caller has them (one lookup per name).

    Raises `ValueError` for an unknown name (listing the display names) and for a name
    several candidates share (listing theirs).
    """
    names = site_names(model, candidates) if names is None else names
    for display, layer in zip(names, candidates):
        if display == name:
            return layer
    owners = [(display, layer) for display, layer in zip(names, candidates) if layer.name == name]
    if len(owners) == 1:
        return owners[0][1]
    if owners:
        raise ValueError(
            f"Argument `{argument}` must name one layer, but {len(owners)} {what} are "
            f"named '{name}': use one of {[display for display, _ in owners]}. "
            f"Received: '{name}'"
        )
    raise ValueError(
        f"Argument `{argument}` must name {what} (available: {sorted(names)}). Received: '{name}'"
    )
