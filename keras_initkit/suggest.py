"""`suggest_initializer`: try candidate initializers on a copy of the model, rank them.

Each candidate re-initializes the kernels of one copy of the model (the user's model,
optimizer and random state are never touched unless `apply=True`), then the probe
measures how the signal propagates through it on the user's data: the scale of the
activations across depth, dead and saturated units, the first-to-last gradient ratio,
symmetric units; optionally the loss after a few training steps. Candidates are ranked
by one documented score (see `suggest_initializer`).
"""

import contextlib
import dataclasses
import math
import random
import time
import warnings

import keras
import numpy as np

from keras_initkit import _keras_private, initializers, table, validation
from keras_initkit.checks.gradients import shapes_attention_scores
from keras_initkit.checks.symmetry import symmetric_units_batch
from keras_initkit.lsuv import lsuv_init
from keras_initkit.probe import (
    KERNEL_LAYERS,
    ActivationMoments,
    DeadUnits,
    Probe,
    Saturation,
    backend,
    check_inputs,
)
from keras_initkit.probe.backend import to_numpy
from keras_initkit.probe.gradients import GradientProbe
from keras_initkit.probe.selection import named_layer, site_names

# The default candidates, in the order they are tried (and break ties).
DEFAULT_CANDIDATES = (
    "current",
    "he_normal",
    "lecun_normal",
    "orthogonal",
    "lsuv",
    "identity",
    "delta_orthogonal",
)
# With verbose="auto", a progress bar appears once a call has run this long (seconds).
AUTO_PROGRESS_AFTER = 2.0
_TRANSPOSE_CONVS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


# -- the report ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """One candidate's measurements on the copy of the model.

    Attributes:
        name: the candidate's name (`"he_normal"`, `"lsuv"`, a user's label).
        description: what it is, e.g. `"HeNormal"` or `"current (GlorotUniform)"`.
        score: the ranking score, lower is better (see `suggest_initializer`);
            `inf` when disqualified.
        activation_drift: decades the hidden layers' output std moves away from the
            first hidden layer's: `max |log10(std_l / std_1)|` (`inf` when a layer
            outputs a constant; `None` with fewer than two hidden kernel layers).
        gradient_ratio: gradient norm of the first kernel layer (not an attention
            query or key projection) over the last one's, or `None` without targets
            or with fewer than two kernel layers. A recurrent layer counts as a
            kernel layer, with the gradient over its own weights (as `diagnose`).
        sensitivity: how much a small step of the input moves the last hidden
            representation, relative to their typical sizes: the geometric mean over
            samples of `(‖f(x + εu) − f(x)‖ / ‖εu‖) / (rms ‖f(x)‖ / rms ‖x‖)`. 1 keeps
            distances (isometry), ≫ 1 is chaos (nearby inputs get unrelated
            representations), ≪ 1 collapse. `None` where it is not measured (see
            `suggest_initializer`).
        sensitivity_spread: the standard deviation over samples of
            `log10(sensitivity)`: how unevenly the net stretches directions (0 for a
            perfectly conditioned Jacobian).
        dead_fraction: mean dead (or inactive) fraction over the hidden rectifier
            layers, or `None` when there are none.
        saturated_fraction: mean saturated fraction over the hidden bounded layers, or
            `None` when there are none.
        loss: the loss on `(x, y)` at initialization, or `None` without targets.
        loss_after: the loss on `(x, y)` after `steps` training steps, or `None`.
        layers: the layers this candidate initialized; the others kept their own
            initializer (see `fallback_layers`).
        fallback_layers: layers the candidate does not apply to (e.g. `identity` on a
            non-square kernel), re-drawn from their own initializer.
        initializers: `layer -> serialized initializer` that drew each kernel: what
            `apply=True` sets as the layer's `kernel_initializer`.
        symmetric_layers: hidden layers with units whose incoming weights and bias equal
            another unit's.
        disqualified: why the candidate cannot be suggested, or `None`.
        notes: warnings raised while it ran (e.g. by `lsuv_init`).
    """

    name: str
    description: str
    score: float
    activation_drift: float
    gradient_ratio: float | None
    sensitivity: float | None
    sensitivity_spread: float | None
    dead_fraction: float | None
    saturated_fraction: float | None
    loss: float | None
    loss_after: float | None
    layers: tuple
    fallback_layers: tuple
    initializers: dict
    symmetric_layers: tuple
    disqualified: str | None
    notes: tuple

    def to_dict(self):
        """The result as plain, JSON-serializable Python data."""
        out = dataclasses.asdict(self)
        for key in ("layers", "fallback_layers", "symmetric_layers", "notes"):
            out[key] = list(out[key])
        return out


def _fmt(value, spec=".3g"):
    return "-" if value is None else format(value, spec)


@dataclasses.dataclass(frozen=True)
class SuggestionReport:
    """What `suggest_initializer` measured, ranked best first.

    `str(report)` is a table, one row per candidate, best first.

    Attributes:
        candidates: the `CandidateResult`s, ranked (disqualified ones last).
        skipped: `(name, reason)` for candidates that apply to no layer of the model.
        steps: the training steps each candidate got (0: signal propagation only).
        source: the data that was used.
        applied: True when the user's model was re-initialized with `best`.
        notes: what the table alone does not say: a term of the score that could not
            be measured on this model (its column shows `-` and it counts 0), and
            candidates that tie on the score (how they were ranked).
    """

    candidates: tuple
    skipped: tuple
    steps: int
    source: str
    applied: bool = False
    notes: tuple = ()

    @property
    def best(self):
        """The winning `CandidateResult`, or `None` when every candidate is disqualified."""
        if self.candidates and self.candidates[0].disqualified is None:
            return self.candidates[0]
        return None

    def __getitem__(self, name):
        """The `CandidateResult` named `name`."""
        for candidate in self.candidates:
            if candidate.name == name:
                return candidate
        raise KeyError(f"No candidate named {name!r}. Candidates: {self.names}")

    @property
    def names(self):
        """Candidate names, ranked."""
        return [c.name for c in self.candidates]

    def to_dict(self):
        """The report as plain, JSON-serializable Python data."""
        return {
            "best": None if self.best is None else self.best.name,
            "steps": self.steps,
            "source": self.source,
            "applied": self.applied,
            "candidates": [c.to_dict() for c in self.candidates],
            "skipped": [list(s) for s in self.skipped],
            "notes": list(self.notes),
        }

    def _table(self, markdown):
        header = ["initializer", "score", "drift", "grad ratio", "sensitivity", "spread"]
        header += ["dead", "saturated", "loss"]
        if self.steps:
            header.append(f"loss@{self.steps}")
        header.append("note")
        rows = []
        for c in self.candidates:
            row = [
                c.name,
                _fmt(c.score, ".3f"),
                _fmt(c.activation_drift, ".2f"),
                _fmt(c.gradient_ratio, ".2e"),
                _fmt(c.sensitivity, ".3g"),
                _fmt(c.sensitivity_spread, ".2f"),
                _fmt(c.dead_fraction, ".0%"),
                _fmt(c.saturated_fraction, ".0%"),
                _fmt(c.loss, ".4g"),
            ]
            if self.steps:
                row.append(_fmt(c.loss_after, ".4g"))
            row.append(c.disqualified or ("; ".join(c.notes)[:60] if c.notes else ""))
            rows.append(row)
        best = "none (every candidate disqualified)" if self.best is None else self.best.name
        applied = ", applied" if self.applied else ""
        title = f"Suggested initializer: {best}{applied} (on {self.source}; lower score is better)"
        text = table.render(header, rows, markdown=markdown, title=title)
        if self.skipped:
            text += "\n" + "\n".join(f"skipped {n}: {why}" for n, why in self.skipped)
        if self.notes:
            text += "\n" + "\n".join(f"note: {note}" for note in self.notes)
        return text

    def __str__(self):
        return self._table(markdown=False)

    def to_markdown(self):
        """The report as a Markdown table."""
        return self._table(markdown=True)


# -- candidates ---------------------------------------------------------------------


@dataclasses.dataclass
class _Candidate:
    """A candidate: `make(layer, kernel shape, seed)` -> initializer, or None (not here)."""

    name: str
    description: str
    make: object
    lsuv: bool = False
    convolutions_only: bool = False


def _reseeded(initializer, seed, keep_int=False):
    """`initializer` drawing with the int `seed` (a layer's own int seed if `keep_int`).

    Keras draws an unseeded initializer's seed from Python's global `random` when it
    is built, and ours draw from Keras' global generator: either would change the
    caller's random state. One int seed for every layer would give equal layers.
    """
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    config = initializer.get_config()
    if "seed" not in config or (keep_int and isinstance(config["seed"], int)):
        return initializer
    return type(initializer).from_config({**config, "seed": seed})


def _in_out(shape, layer):
    if isinstance(layer, _TRANSPOSE_CONVS):
        return shape[-1], shape[-2]
    view = _einsum_view(layer, shape)
    if view is not None:
        return view[1], view[2]
    return shape[-2], shape[-1]


def _einsum_view(layer, shape):
    """`(input axes, fan_in, fan_out)` of an `EinsumDense` kernel of `shape`: the axes
    contracted with the layer's input, and the products of those and of the others
    (attention's query projection `btd,dnh->btnh`: axes (0,), 64 by 4 × 16); None for
    another layer, or a kernel axis that is neither (a per-head weight)."""
    if not isinstance(layer, keras.layers.EinsumDense) or "..." in layer.equation:
        return None
    given, rest = layer.equation.split(",")
    kernel, output = rest.split("->")
    if len(kernel) != len(shape):
        return None
    ins = [i for i, c in enumerate(kernel) if c in given and c not in output]
    outs = [i for i, c in enumerate(kernel) if c in output and c not in given]
    if not ins or not outs or len(ins) + len(outs) != len(kernel):
        return None
    return tuple(ins), math.prod(shape[i] for i in ins), math.prod(shape[i] for i in outs)


@keras.saving.register_keras_serializable(package="keras_initkit", name="EinsumMatrix")
class _EinsumMatrix(keras.initializers.Initializer):
    """`initializer` drawn on an `EinsumDense` kernel's matrix view, `(fan_in,
    fan_out)` (`_einsum_view`), then laid out as the kernel.

    Keras' initializers read a kernel of rank 3 or more as a convolution's (receptive
    field × channels): for attention's `(hidden, heads, head_dim)` projections they
    draw He at half its intended std, an "orthogonal" kernel that is no orthogonal map,
    and a delta or identity kernel that reads one input feature.
    """

    def __init__(self, initializer, input_axes):
        self.initializer = keras.initializers.get(initializer)
        self.input_axes = tuple(int(a) for a in input_axes)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        order = [*self.input_axes, *(i for i in range(len(shape)) if i not in self.input_axes)]
        fan_in = math.prod(shape[i] for i in self.input_axes)
        matrix = self.initializer((fan_in, math.prod(shape) // fan_in), dtype=dtype)
        laid = keras.ops.reshape(matrix, [shape[i] for i in order])
        return keras.ops.transpose(laid, [int(i) for i in np.argsort(order)])

    def get_config(self):
        return {
            "initializer": keras.initializers.serialize(self.initializer),
            "input_axes": list(self.input_axes),
        }


def _as_matrix(initializer, layer, shape):
    """`initializer` for `layer`'s kernel: drawn on its matrix view where that is not
    the kernel itself (an `EinsumDense` kernel of rank 3 or more, or one whose input
    axis comes second)."""
    view = _einsum_view(layer, shape)
    if view is None or (len(shape) == 2 and view[0] == (0,)):
        return initializer
    return _EinsumMatrix(initializer, view[0])


def _convolution(layer):
    """A convolution with one group (not a Dense or EinsumDense, not grouped): what
    the convolution-only candidates apply to."""
    kernel_layers = (keras.layers.Dense, keras.layers.EinsumDense)
    return (
        isinstance(layer, KERNEL_LAYERS)
        and not isinstance(layer, kernel_layers)
        and getattr(layer, "groups", 1) == 1
    )


def _orthogonal_gain(layer):
    """The gain of the `"orthogonal"` candidate for the layer's own activation.

    Rectifiers get `calculate_gain` (√2 for relu: the gain that keeps the mean square);
    every other activation gets 1, the edge of chaos of tanh-like nets with orthogonal
    weights and zero biases (Pennington et al., 2017), not torch's 5/3 for tanh (which
    starts a deep tanh net in the chaotic phase, see docs/choosing.md).
    """
    activation = getattr(layer, "activation", None)
    for name in ("relu", "relu6", "leaky_relu"):
        if activation is keras.activations.get(name):
            return initializers.calculate_gain(name)
    return 1.0


def _builtin(name):
    """The built-in candidate `name`."""
    if name == "current":
        return _Candidate(
            "current",
            "current",
            lambda layer, shape, seed: _reseeded(layer.kernel_initializer, seed, keep_int=True),
        )
    if name == "he_normal":
        return _Candidate(
            "he_normal", "HeNormal", lambda _, s, seed: keras.initializers.HeNormal(seed)
        )
    if name == "lecun_normal":
        return _Candidate(
            "lecun_normal", "LecunNormal", lambda _, s, seed: keras.initializers.LecunNormal(seed)
        )
    if name == "orthogonal":
        return _Candidate(
            "orthogonal",
            "Orthogonal (gain √2 for rectifiers, else 1)",
            lambda layer, s, seed: keras.initializers.Orthogonal(_orthogonal_gain(layer), seed),
        )
    if name == "lsuv":
        return _Candidate(
            "lsuv",
            "LSUV: Orthogonal + lsuv_init",
            lambda _, s, seed: initializers.LSUV(seed=seed),
            lsuv=True,
        )
    if name == "identity":

        def identity(layer, shape, seed):
            fan_in, units = _in_out(shape, layer)
            if getattr(layer, "groups", 1) != 1:  # a grouped kernel maps within groups
                return None
            return initializers.Identity() if fan_in == units else None

        return _Candidate("identity", "Identity (square kernels)", identity)

    def delta_orthogonal(layer, shape, seed):
        fan_in, units = _in_out(shape, layer)
        if not _convolution(layer) or isinstance(layer, _TRANSPOSE_CONVS) or fan_in > units:
            return None
        return initializers.DeltaOrthogonal(seed=seed)

    return _Candidate(
        "delta_orthogonal",
        "DeltaOrthogonal (convolutions)",
        delta_orthogonal,
        convolutions_only=True,
    )


def _user(name, initializer):
    """A candidate from a Keras initializer identifier or an `Initializer`."""
    description = type(initializer).__name__
    return _Candidate(name, description, lambda _, shape, seed: _reseeded(initializer, seed))


def _candidates(candidates):
    """The `_Candidate`s for the `candidates` argument."""
    if candidates is None:
        return [_builtin(n) for n in DEFAULT_CANDIDATES]
    if isinstance(candidates, dict):
        items = list(candidates.items())
    elif isinstance(candidates, (list, tuple)):
        items = [(None, c) for c in candidates]
    else:
        items = None
    if not items:
        raise ValueError(
            "Argument `candidates` must be a non-empty list of initializers (names or "
            "`keras.initializers.Initializer` instances), a non-empty dict "
            f"`{{name: initializer}}`, or None. Received: candidates={candidates!r}"
        )
    out = []
    for label, spec in items:
        if label is not None and (not isinstance(label, str) or not label):
            raise ValueError(f"Candidate names must be non-empty strings. Received: name={label!r}")
        if isinstance(spec, str) and spec in DEFAULT_CANDIDATES:
            made = _builtin(spec)
        elif isinstance(spec, keras.initializers.Initializer):
            made = _user(label or type(spec).__name__, spec)
        elif isinstance(spec, (str, dict)):
            try:
                made = _user(label or str(spec), keras.initializers.get(spec))
            except Exception as error:  # Keras raises ValueError, TypeError, KeyError
                raise ValueError(
                    f"Argument `candidates` has an unknown initializer: use one of "
                    f"{DEFAULT_CANDIDATES}, a Keras initializer name ('glorot_normal', "
                    "'keras_initkit>Sparse'), or an `Initializer` instance. "
                    f"Received: {spec!r} ({error})"
                ) from None
        else:
            raise ValueError(
                "Argument `candidates` must hold initializer names or "
                "`keras.initializers.Initializer` instances. "
                f"Received: {spec!r} of type {type(spec).__name__}"
            )
        if label is not None:
            made.name = label
        out.append(made)
    names = [c.name for c in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Candidate names must be unique (pass a dict `{name: initializer}` to name "
            f"them). Received: {duplicates} more than once in {names}"
        )
    return out


# -- copying the model, keeping random state ------------------------------------------


def _global_seed_generator_state():
    """(getter, setter) for Keras' global `SeedGenerator`, the one `keras.random` ops use
    without a seed. Private (`keras.src.backend.common.global_state`): Keras has no
    public way to read or restore that generator."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    name = seed_generator.GLOBAL_SEED_GENERATOR

    def get():
        gen = global_state.get_global_attribute(name)
        return gen, None if gen is None else to_numpy(gen.state)

    def put(saved):
        gen, value = saved
        global_state.set_global_attribute(name, gen)
        if gen is not None:
            gen.state.assign(value)

    return get, put


@contextlib.contextmanager
def _random_state_kept():
    """Python's, NumPy's, Keras' global and (torch backend) torch's random state, restored."""
    get_keras, put_keras = _global_seed_generator_state()
    saved = (random.getstate(), np.random.get_state(), get_keras())  # noqa: NPY002
    try:
        with backend.current().preserving_rng():  # the backend's own global generator
            yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])  # noqa: NPY002 (the legacy global state is the one kept)
        put_keras(saved[2])


def _copy(model):
    """A clone of `model` with the same weights; a clear error where Keras cannot clone."""
    try:
        copy = keras.models.clone_model(model)
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        copy.set_weights([to_numpy(w) for w in model.weights])  # get_weights: NumPy warns
    except Exception as error:  # clone_model raises TypeError, ValueError, ...
        functional = isinstance(model, keras.Sequential) or getattr(model, "_nodes_by_depth", None)
        hint = (
            ""
            if functional
            else " Sequential and Functional models always work; a subclassed model needs "
            "`get_config` and `from_config` (see the Keras guide on serialization)."
        )
        raise ValueError(
            "`suggest_initializer` tries the candidates on a copy made with "
            f"`keras.models.clone_model`, which failed for this model.{hint} Received: model "
            f"'{model.name}' of type {type(model).__name__} ({type(error).__name__}: {error})"
        ) from error
    return copy


def _targets(model, copy, layers):
    """`(user layer, copy layer)` for every layer whose `kernel` is re-initialized."""
    ours, theirs = _keras_private.sublayers(model), _keras_private.sublayers(copy)
    if [type(a) for a in ours] != [type(b) for b in theirs]:
        raise ValueError(
            "The copy of the model made by `keras.models.clone_model` has different "
            f"layers. Received: model '{model.name}' of type {type(model).__name__}"
        )
    pairs = [
        (a, b)
        for a, b in zip(ours, theirs)
        if isinstance(getattr(a, "kernel", None), keras.Variable)
        and hasattr(a, "kernel_initializer")
        and len(a.kernel.shape) >= 2
    ]
    if layers is not None:
        if isinstance(layers, (str, keras.layers.Layer)) or not isinstance(layers, (list, tuple)):
            raise ValueError(
                "Argument `layers` must be a list of layer names or layers, or None. "
                f"Received: layers={layers!r}"
            )
        if not layers:
            raise ValueError(
                "Argument `layers` must name at least one layer with a kernel, or be None "
                "(every one). Received: layers=[]"
            )
        users, by_id = [a for a, _ in pairs], {id(pair[0]): pair for pair in pairs}
        what, names = "layers of the model that have a kernel", site_names(model, users)
        chosen = []
        for item in layers:
            if isinstance(item, str):
                item = named_layer(model, users, item, what=what, names=names)
            if not isinstance(item, keras.layers.Layer) or id(item) not in by_id:
                raise ValueError(
                    f"Argument `layers` must name {what} (available: {sorted(names)}). "
                    f"Received: {item!r}"
                )
            chosen.append(by_id[id(item)])
        pairs = [p for p in pairs if any(p is c for c in chosen)]
    if not pairs:
        raise ValueError(
            "`suggest_initializer` needs a model with at least one kernel layer (Dense, "
            f"Conv*, EinsumDense, ...). Received: model '{model.name}' without one"
        )
    return pairs


def _layer_seed(seed, index):
    """A distinct int seed per layer (an int seed repeats its values on every call)."""
    h = (seed * 0x9E3779B1 + (index + 1) * 0x85EBCA77) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) * 0x7FEB352D) & 0x7FFFFFFF


def _slice(x, start, stop):
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def _num_samples(x):
    return int(keras.tree.flatten(x)[0].shape[0])


# -- the measurement ------------------------------------------------------------------


class _Trial:
    """One copy of the model and its probes, re-initialized per candidate."""

    def __init__(self, model, x, y, *, layers, loss, optimizer, steps, batch_size, seed):
        self.x, self.y = x, y
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.copy = copy = _copy(model)
        self.pairs = _targets(model, copy, layers)
        self.names = site_names(model, [a for a, _ in self.pairs])  # display names
        self.optimizer = None
        if y is not None:
            loss = loss if loss is not None else getattr(model, "loss", None)
            if loss is None:
                raise ValueError(
                    "Targets need a loss to measure gradients: compile the model with a "
                    "`loss` or pass `loss=`. Received: y and loss=None for an uncompiled "
                    f"model '{model.name}'"
                )
            if optimizer is None:
                optimizer = getattr(model, "optimizer", None)
            if optimizer is None and steps:
                raise ValueError(
                    "Argument `steps` > 0 trains a copy of the model: compile the model "
                    "with an optimizer or pass `optimizer=`. Received: steps="
                    f"{steps} and no optimizer for model '{model.name}'"
                )
            # A fresh optimizer from the user's config: the user's one is never used.
            fresh = keras.optimizers.get(optimizer or "sgd")
            if isinstance(fresh, keras.optimizers.Optimizer):
                fresh = keras.optimizers.deserialize(keras.optimizers.serialize(fresh))
            copy.compile(optimizer=fresh, loss=loss)
            if steps:
                fresh.build(copy.trainable_variables)
                self.optimizer = fresh
                self.optimizer_start = [to_numpy(v) for v in fresh.variables]
        self.start = [to_numpy(v) for v in copy.variables]
        self.probe = Probe(copy, [ActivationMoments(), Saturation(), DeadUnits()])
        self._sensitivity_setup()
        # With targets one pass measures both (the forward statistics ride along).
        self.gradients = None if y is None else GradientProbe(copy, forward=self.probe)

    def reset(self):
        for variable, value in zip(self.copy.variables, self.start):
            variable.assign(value)
        if self.optimizer is not None:
            for variable, value in zip(self.optimizer.variables, self.optimizer_start):
                variable.assign(value)

    def initialize(self, candidate):
        """Draws the candidate's kernels into the copy.

        Returns the initializer of each target layer (in `pairs` order) and the names
        of the layers the candidate itself drew and of those that fell back.
        """
        used, own, fallback = [], [], []
        for index, (user_layer, layer) in enumerate(self.pairs):
            shape = tuple(layer.kernel.shape)
            seed = _layer_seed(self.seed, index)
            initializer = candidate.make(user_layer, shape, seed)
            if initializer is not None and candidate.name != "current":
                initializer = _as_matrix(initializer, user_layer, shape)
            values = None
            if initializer is not None:
                try:
                    values = initializer(shape, dtype=layer.kernel.dtype)
                except ValueError:  # the initializer does not take this shape
                    values = None
            if values is None:
                initializer = _reseeded(user_layer.kernel_initializer, seed, keep_int=True)
                values = initializer(shape, dtype=layer.kernel.dtype)
                fallback.append(self.names[index])
            else:
                own.append(self.names[index])
            layer.kernel.assign(values)
            used.append(initializer)
        return used, own, fallback

    def _sensitivity_setup(self):
        """The last hidden representation as a function of `x`, and a perturbation."""
        self.features = None
        # why the sensitivity is not measured (a note of the report), until it is
        self.no_sensitivity = "the model has several inputs"
        x = self.x
        if not (isinstance(x, np.ndarray) or keras.ops.is_tensor(x)):
            return  # several inputs: not measured
        x = to_numpy(x)
        if not np.issubdtype(x.dtype, np.floating) or x.ndim < 2 or x.shape[0] < 2:
            # token ids and the like: no small step to take
            if not np.issubdtype(x.dtype, np.floating):
                self.no_sensitivity = "the input is not floating-point data (token ids?)"
            elif x.ndim < 2:
                self.no_sensitivity = "the input has no feature axis (one value per sample)"
            else:
                self.no_sensitivity = "the input holds fewer than two samples"
            return
        half = {layer.compute_dtype for layer in _keras_private.sublayers(self.copy)}
        half &= {"float16", "bfloat16"}
        if half:  # bfloat16 keeps 8 bits: a 1% step is within a few roundings
            self.no_sensitivity = (
                f"the model computes in {sorted(half)[0]}, whose rounding is of the order of "
                "the 1% input step the sensitivity takes"
            )
            return
        try:
            (inputs,) = self.copy.inputs  # one input (checked above)
            self.features = keras.Model(inputs, self.pairs[-1][1].input)
        except Exception:  # a subclassed or shared layer has no single symbolic input
            self.no_sensitivity = "the last kernel layer has no single symbolic input"
            return
        self.no_sensitivity = None
        rng = np.random.default_rng(self.seed)
        flat = x.reshape(len(x), -1).astype("float64")
        u = rng.standard_normal(flat.shape)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        # a step of 1% of a typical sample's norm
        self.step = 0.01 * float(np.sqrt(np.mean(np.sum(flat**2, axis=1))))
        self.x_norm = float(np.sqrt(np.mean(np.sum(flat**2, axis=1))))
        self.x_float = x
        self.x_moved = (flat + self.step * u).reshape(x.shape).astype(x.dtype)

    def sensitivity(self):
        """`(log10 geometric-mean sensitivity, spread)`, or `(None, None)`."""
        if self.features is None or not self.step > 0:
            return None, None
        f0 = to_numpy(self.features(self.x_float, training=False))
        f1 = to_numpy(self.features(self.x_moved, training=False))
        f0 = f0.reshape(len(f0), -1).astype("float64")
        f1 = f1.reshape(len(f1), -1).astype("float64")
        typical = float(np.sqrt(np.mean(np.sum(f0**2, axis=1))))
        moved = np.linalg.norm(f1 - f0, axis=1) / self.step
        # A sample whose every unit is dead does not move at all: the dead fraction
        # counts it; the sensitivity is that of the samples that move.
        moving = moved[moved > 0]
        if not (np.all(np.isfinite(moved)) and typical > 0 and moving.size):
            return math.inf, math.inf
        logs = np.log10(moving / (typical / self.x_norm))
        return float(np.mean(logs)), float(np.std(logs))

    def measure(self):
        """One probe pass, one gradient pass (with targets) and the sensitivity."""
        if self.gradients is None:
            return self.probe.run(self.x, argument="x"), None, self.sensitivity()
        grads = self.gradients.run((self.x, self.y), argument="x")
        return grads.forward, grads, self.sensitivity()

    def train(self):
        """`steps` training steps on `(x, y)` in order, batch after batch, wrapping around."""
        n = _num_samples(self.x)
        size = min(self.batch_size, n)
        starts = list(range(0, n - size + 1, size))
        for step in range(self.steps):
            start = starts[step % len(starts)]
            self.copy.train_on_batch(
                _slice(self.x, start, start + size), _slice(self.y, start, start + size)
            )
        return float(self.gradients.run((self.x, self.y)).loss)


def _target_sites(sites, copy_ids):
    """The probe's sites of the re-initialized layers, in forward order.

    A recurrent layer's kernels are its cell's (`LSTM` -> `LSTMCell`, `RNN` over
    `StackedRNNCells`, each direction of a `Bidirectional`): the cells are the targets,
    while the probe watches (and `diagnose` judges) the recurrent layer that runs them.
    Such a layer stands for its cells here, as in `diagnose`'s gradient ratio."""
    out = []
    for site in sites:
        if id(site.layer) in copy_ids or (
            site.kind == "recurrent"
            and any(id(inner) in copy_ids for inner in _keras_private.sublayers(site.layer))
        ):
            out.append(site)
    return out


def _activation_drift(result, hidden_kernels):
    """`(drift, reasons)`: how many decades the hidden kernel layers' output std moves
    away from the first one's (None: fewer than two measured, nothing to compare), and
    why it is infinite (no finite or no varying signal)."""
    stds = [result.metrics[s.name].get("activation_std") for s in hidden_kernels]
    stds = [s for s in stds if s is not None]
    if not stds:
        return None, []
    if not all(math.isfinite(s) for s in stds):
        return math.inf, ["non-finite activations"]
    if min(stds) <= 0:
        flat = next(
            s.name for s in hidden_kernels if result.metrics[s.name].get("activation_std", 1.0) <= 0
        )
        return math.inf, [f"no signal: {flat} outputs a constant"]
    if len(stds) < 2:
        return None, []
    return max(abs(math.log10(s / stds[0])) for s in stds), []


def _mean_metric(result, sites, *keys):
    """The mean of the `keys` metrics over `sites`, or None when none was measured."""
    values = [v for s in sites for k in keys if (v := result.metrics[s.name].get(k)) is not None]
    return float(np.mean(values)) if values else None


def _gradient_terms(grads, copy_ids):
    """`(ratio, loss, gradient_term, reasons)` from a gradient pass (None: no targets):
    the first kernel layer's gradient norm over the last one's, and its score term.
    A recurrent layer counts with the gradient over its own weights (its cells'), as in
    `diagnose`."""
    if grads is None:
        return None, None, 0.0, []
    ratio, loss, gradient_term, reasons = None, float(grads.loss), 0.0, []
    norms = [  # forward order; the first layer is not a query or key projection
        grads.metrics[s.name]["gradient_norm"]
        for s in _target_sites(grads.sites, copy_ids)
        if "gradient_norm" in grads.metrics.get(s.name, {}) and not shapes_attention_scores(s)
    ]
    if len(norms) >= 2:
        first, last_norm = norms[0], norms[-1]
        if not (math.isfinite(first) and math.isfinite(last_norm)):
            ratio, gradient_term = math.inf, math.inf
            reasons.append("non-finite gradients")
        elif first > 0 and last_norm > 0:
            ratio = first / last_norm
            gradient_term = abs(math.log10(ratio))
        else:
            ratio = 0.0 if last_norm > 0 else math.inf
            gradient_term = math.inf
            reasons.append("no gradient reaches the first or last kernel layer")
    if not math.isfinite(loss):
        reasons.append("non-finite loss")
    return ratio, loss, gradient_term, reasons


def _symmetric_layers(trial):
    """The names of the hidden kernel layers of the copy that have symmetric units
    (the health check's definition and code, `checks.symmetry`: one host transfer)."""
    layers = [layer for _, layer in (trial.pairs[:-1] or trial.pairs)]
    counted = symmetric_units_batch(layers)
    return tuple(name for name, c in zip(trial.names, counted) if c is not None and c[0] > 0)


def _score(trial, result, grads, sensitivity):
    """The candidate's numbers: drift, gradient ratio, dead, saturated, symmetric, reason."""
    copy_ids = {id(layer) for _, layer in trial.pairs}
    sites = [s for s in result.sites if s.name in result.metrics]
    kernel_sites = _target_sites(sites, copy_ids)
    last = sites.index(kernel_sites[-1]) if kernel_sites else len(sites)
    hidden_sites = sites[:last] if last > 0 else sites
    hidden_kernels = kernel_sites[:-1] or kernel_sites

    drift, reasons = _activation_drift(result, hidden_kernels)
    dead = _mean_metric(result, hidden_sites, "dead_fraction", "inactive_fraction")
    saturated = _mean_metric(result, hidden_sites, "saturated_fraction")
    ratio, loss, gradient_term, gradient_reasons = _gradient_terms(grads, copy_ids)
    reasons += gradient_reasons

    symmetric = _symmetric_layers(trial)
    if symmetric:
        reasons.insert(0, f"symmetric units in {', '.join(symmetric[:3])}")
    log_gain, spread = sensitivity
    sensitivity_term = 0.0 if log_gain is None else abs(log_gain) + spread
    if log_gain is not None and not math.isfinite(sensitivity_term):
        reasons.append("no sensitivity to the input")
    score = (drift or 0.0) + gradient_term + sensitivity_term + (dead or 0.0) + (saturated or 0.0)
    return {
        "activation_drift": drift,
        "gradient_ratio": ratio,
        "sensitivity": None if log_gain is None else 10.0**log_gain,
        "sensitivity_spread": spread,
        "dead_fraction": dead,
        "saturated_fraction": saturated,
        "loss": loss,
        "symmetric_layers": symmetric,
        "score": score,
        "reasons": reasons,
    }


def _description(candidate, used):
    if candidate.description != "current":
        return candidate.description
    kinds = sorted({type(i).__name__ for i in used})
    return f"current ({', '.join(kinds)})"


def _check_arguments(model, x, y, candidates, steps, apply, batch_size, seed, verbose):
    """Validates `suggest_initializer`'s arguments; raises `ValueError` on a bad one.

    Returns `(specs, steps, apply, batch_size, verbose)`: the candidates to try and the
    normalized values of the other arguments."""
    validation.model(model)
    if not model.built:
        raise ValueError(
            "Argument `model` must be built (call it on a batch, or give it an `Input`). "
            f"Received: unbuilt model '{model.name}'"
        )
    for name, data in (("x", x), ("y", y)):
        leaves = [] if data is None else keras.tree.flatten(data)
        if (data is not None or name == "x") and not (
            leaves and all(isinstance(a, np.ndarray) or keras.ops.is_tensor(a) for a in leaves)
        ):
            raise ValueError(
                f"Argument `{name}` must be an array or tensor (a list or dict of them for "
                "several inputs): a few hundred samples, used all at once. "
                f"Received: {name} of type {type(data).__name__}"
            )
    if isinstance(x, tuple) and len(x) == 2 and len(getattr(model, "inputs", None) or ()) == 1:
        raise ValueError(
            "Argument `x` must be the inputs alone; pass the targets as `y=` (the monitors "
            "take `(x, y)`, suggest_initializer takes x and y apart). Received: a tuple of "
            f"2 arrays for model '{model.name}', which has 1 input"
        )
    check_inputs(model, [(x, None)], argument="x")
    specs = _candidates(candidates)
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps == 0:
        steps = 0
    else:
        steps = validation.positive_int(steps, "steps", allow_none=False)
    apply = validation.boolean(apply, "apply")
    batch_size = validation.positive_int(batch_size, "batch_size", allow_none=False)
    verbose = validation.verbose(verbose)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Argument `seed` must be an int >= 0. Received: seed={seed!r}")
    if steps and y is None:
        raise ValueError(
            "Argument `steps` > 0 trains each candidate and needs targets: pass `y`. "
            f"Received: steps={steps} and y=None"
        )
    if y is not None and _num_samples(y) != _num_samples(x):
        raise ValueError(
            "Arguments `x` and `y` must have the same number of samples. Received: "
            f"{_num_samples(x)} and {_num_samples(y)}"
        )
    return specs, steps, apply, batch_size, verbose


def suggest_initializer(
    model,
    x,
    y=None,
    *,
    candidates=None,
    steps=0,
    apply=False,
    loss=None,
    optimizer=None,
    layers=None,
    batch_size=32,
    seed=0,
    verbose="auto",
):
    """Try candidate initializers on a copy of `model` and data `x`; rank them.

    For each candidate, a copy of the model (`keras.models.clone_model`, with the
    model's weights) has its kernels re-initialized, then the probe runs it on `x`
    (`training=False`; batch norm uses the batch statistics, as training does), two
    forward passes measure its sensitivity to a small step of the input and, with
    targets `y`, one pass measures the gradient of the loss. With `steps > 0`, the
    copy is then trained for `steps` steps on `(x, y)` with a fresh optimizer built
    from the model's (or `optimizer=`), and the loss measured again.

    **Score** (lower is better; the table shows every term):

    - with `steps=0`, signal propagation:
      `drift + |log10(gradient_ratio)| + |log10(sensitivity)| + spread + dead + saturated`:
        - `drift = max_l |log10(std_l / std_1)|`: how many decades the output std of
          a hidden kernel layer `l` (every kernel layer but the last) moves away from
          the first one's (forward signal vanishing or exploding); 0 (shown `-`) with
          fewer than two hidden kernel layers. A recurrent layer (LSTM, GRU, `RNN`,
          each direction of a `Bidirectional`) is a kernel layer here and for the
          gradient ratio: its cells' kernels are the ones drawn;
        - `gradient_ratio`: the gradient norm of the first kernel layer over the last
          one's (backward signal; a term only when `y` is given). Attention's query and
          key projections are not the first layer here: their gradients are tiny while
          attention is near uniform, whatever the initializer;
        - `sensitivity`: how far the last hidden representation `f` moves for a step
          `εu` of the input (`u` a random direction per sample, `ε` 1% of a sample's
          norm), relative to their typical sizes: the geometric mean over samples of
          `(‖f(x + εu) − f(x)‖ / ε) / (rms ‖f(x)‖ / rms ‖x‖)`. 1 keeps distances;
          ≫ 1 is the chaotic phase (nearby inputs get unrelated representations: He
          init or a 5/3 gain in a deep tanh net), ≪ 1 the ordered one (inputs
          collapse together). `spread` is the standard deviation over samples of its
          `log10`: how unevenly the net stretches the input (Saxe et al.'s and
          Pennington et al.'s dynamical isometry: 0 for orthogonal maps). Measured
          for a model with one floating-point input whose last kernel layer has one
          symbolic input (Sequential, Functional); otherwise the two terms are 0 and
          the table shows `-`;
        - `dead`, `saturated`: the mean dead (rectifiers) and saturated (bounded
          activations) fractions of the hidden layers, 0 to 1 each.

      A net that keeps its signal's and its gradient's scale through depth, maps
      inputs isometrically and has live, unsaturated units scores 0.
    - with `steps > 0`: the loss on `(x, y)` after the `steps` training steps: the
      direct evidence, at the cost of the training.

    A candidate is **disqualified** (ranked last, never suggested nor applied) when a
    hidden kernel layer has symmetric units (incoming weights and bias equal to
    another unit's: they would stay equal, e.g. zero initialization), when a hidden
    layer outputs a constant, or when an activation, gradient or loss is not finite.
    Ties on the score go to the lower loss at initialization (with `y`), then keep the
    candidates' order. `report.notes` (the `note:` lines under the table) says which
    ties there were and which terms could not be measured on this model.

    **Candidates** (`candidates=None`), in order:

    - `"current"`: each layer's own `kernel_initializer` (Keras' default
      `glorot_uniform` unless the model sets another), freshly drawn;
    - `"he_normal"`, `"lecun_normal"`: `keras.initializers.HeNormal`, `LecunNormal`;
    - `"orthogonal"`: `keras.initializers.Orthogonal(gain=g)`, `g` =
      `calculate_gain` for rectifier layers (√2 for relu) and 1 for every other
      activation: for tanh, 1 is the edge of chaos (Pennington et al., 2017), where
      torch's 5/3 starts a deep net chaotic;
    - `"lsuv"`: `keras_initkit.initializers.LSUV` (orthogonal) then
      `keras_initkit.lsuv_init(copy, x)` on the re-initialized layers;
    - `"identity"`: `keras_initkit.initializers.Identity()` on square kernels (`in ==
      out`, conv kernels: centre tap);
    - `"delta_orthogonal"`: `keras_initkit.initializers.DeltaOrthogonal` on
      convolutions with `in <= out` channels (tried only when the model has one).

    A layer a candidate does not apply to (`identity` on a non-square kernel, an
    initializer that rejects the shape) is re-drawn from its own initializer, and a
    candidate that applies to no layer is skipped. Every candidate gets a distinct
    int seed per layer, derived from `seed`: the run is deterministic, and it draws
    nothing from the global random generators.

    **Nothing of the caller's changes** unless `apply=True`: the model's weights,
    its optimizer (never used: the copy gets its own), Python's, NumPy's and Keras'
    global random state (restored on exit; torch's too on the torch backend). With
    `apply=True`, the user's model gets the winner's kernels (the exact values
    measured, LSUV's calibrated ones included) and each re-initialized layer's
    `kernel_initializer` is set to the (seeded) initializer that drew it, so a saved
    model records it; biases and other weights are not touched.

    **Cost**: one clone of the model; per candidate, one probe pass and (with `y`)
    one gradient pass over `x` (each compiled once, on the first candidate) and two
    eager forward passes for the sensitivity, plus one eager calibration pass for
    `lsuv`, plus, with `steps > 0`, `steps` training steps and a gradient pass. For
    the six default candidates that is about 20 forward-pass equivalents over `x`
    plus the traces: 5 to 10 s for a 32-layer MLP on 256 samples on 2 CPU cores.

    Args:
        model: a built Keras model: Sequential or Functional (a subclassed model
            needs `get_config`/`from_config`, or the copy fails with a `ValueError`).
        x: input data: an array or tensor (a list/dict of them for multi-input
            models); a few hundred samples.
        y: targets for `x`; enables the gradient ratio and `steps`. Defaults to `None`.
        candidates: a list of initializers to try (built-in names above, Keras
            initializer names such as `"glorot_normal"` or `"keras_initkit>Sparse"`,
            or `keras.initializers.Initializer` instances), a dict `{name:
            initializer}` to name them, or `None` for the defaults above. Defaults to
            `None`.
        steps: training steps per candidate (needs `y` and an optimizer); 0 ranks by
            signal propagation only. Defaults to `0`.
        apply: re-initialize `model` with the winner and record it as the layers'
            `kernel_initializer`. Defaults to `False`.
        loss: the loss for the gradient and training; `None` uses the model's
            compiled loss. Defaults to `None`.
        optimizer: the optimizer (name, config or instance; a fresh copy is used) for
            `steps > 0`; `None` uses the model's compiled one's config. Defaults to
            `None`.
        layers: names (or layers) of the kernel layers to re-initialize; `None` for
            every layer with a `kernel` and a `kernel_initializer`. Defaults to `None`.
        batch_size: the batch size of the training steps. Defaults to `32`.
        seed: an int from which every per-layer seed is derived. Defaults to `0`.
        verbose: `0` silent, `1` a progress bar over the candidates, `"auto"` the bar
            once the call has taken more than 2 seconds. Defaults to `"auto"`.

    Returns:
        A `SuggestionReport`: print it for the table; `report.best` is the winning
        `CandidateResult` (`None` when every candidate is disqualified).

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    report = keras_initkit.suggest_initializer(model, x_train[:256], y_train[:256])
    print(report)
    report = keras_initkit.suggest_initializer(
        model, x_train[:256], y_train[:256], apply=True
    )  # the model now starts from report.best
    ```

    Reference:

    - [Glorot & Bengio, 2010](https://proceedings.mlr.press/v9/glorot10a.html)
    - [He et al., 2015](https://arxiv.org/abs/1502.01852)
    - [Saxe et al., 2014](https://arxiv.org/abs/1312.6120) (orthogonal)
    - [Mishkin & Matas, 2016](https://arxiv.org/abs/1511.06422) (LSUV)
    """
    specs, steps, apply, batch_size, verbose = _check_arguments(
        model, x, y, candidates, steps, apply, batch_size, seed, verbose
    )

    started = time.perf_counter()
    with _random_state_kept():
        trial = _Trial(
            model,
            x,
            y,
            layers=layers,
            loss=loss,
            optimizer=optimizer,
            steps=steps,
            batch_size=batch_size,
            seed=int(seed),
        )
        report, winner = _run(trial, specs, verbose, started, keep_winner=apply)
    if apply:
        if report.best is None:
            raise ValueError(
                "`apply=True` needs a candidate to apply, but every candidate was "
                f"disqualified:\n{report}"
            )
        kernels, used = winner
        for (user_layer, _), values, initializer in zip(trial.pairs, kernels, used):
            user_layer.kernel.assign(values)
            user_layer.kernel_initializer = initializer
        report = dataclasses.replace(report, applied=True)
    return report


def _applicable(trial, specs):
    """`(specs, skipped)`: the candidates that may apply to the model, and `(name, why)`
    of those that cannot (convolution-only candidates for a model without one)."""
    specs = list(specs)
    skipped = []
    if not any(_convolution(layer) for _, layer in trial.pairs):
        for spec in [s for s in specs if s.convolutions_only]:
            skipped.append((spec.name, "no convolution in the model"))
            specs.remove(spec)
    return specs, skipped


def _lsuv_notes(trial):
    """Calibrates the copy's target layers with LSUV; its warnings (a dead layer, no
    convergence) as notes."""
    # A recurrent cell's input kernel is drawn like any other, but LSUV calibrates
    # feed-forward layers only (`lsuv_init` skips recurrent layers, and refuses their
    # cells by name): the cells keep the candidate's draw.
    layers = [b for _, b in trial.pairs if not hasattr(b, "state_size")]
    if not layers:
        return ["LSUV: no feed-forward kernel layer to calibrate (recurrent layers keep the draw)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lsuv_init(trial.copy, trial.x, layers=layers, verbose=0)
    return [
        str(w.message).split("\n")[0]
        for w in caught
        if issubclass(w.category, UserWarning)  # not a library's deprecation notice
    ]


def _final_score(trial, score, reasons):
    """`(score, loss_after, reasons)`: with `steps > 0` the score is the loss after
    training the copy (trained only when nothing disqualified it); inf when disqualified."""
    reasons = list(reasons)
    loss_after = None
    if trial.steps and not reasons:
        loss_after = trial.train()
        if not math.isfinite(loss_after):
            reasons.append("non-finite loss after training")
    if trial.steps:
        score = math.inf if loss_after is None else loss_after
    if not math.isfinite(score) and not reasons:
        reasons.append("the score is not finite")
    if reasons:
        score = math.inf
    return score, loss_after, reasons


def _candidate_result(trial, spec, drawn, notes, measured):
    """The `CandidateResult` of a candidate drawn into the copy (`drawn`: `(used, own,
    fallback)` from `_Trial.initialize`) and measured (`_Trial.measure`)."""
    used, own, fallback = drawn
    numbers = _score(trial, *measured)
    reasons = numbers.pop("reasons")
    score, loss_after, reasons = _final_score(trial, numbers.pop("score"), reasons)
    return CandidateResult(
        name=spec.name,
        description=_description(spec, used),
        score=float(score),
        loss_after=loss_after,
        layers=tuple(own),
        fallback_layers=tuple(fallback),
        initializers={
            name: keras.saving.serialize_keras_object(i) for name, i in zip(trial.names, used)
        },
        disqualified="; ".join(reasons) or None,
        notes=tuple(dict.fromkeys(notes)),
        **numbers,
    )


def _progress_bar(bar, verbose, started, total):
    """`bar`, or a new progress bar once `verbose="auto"` has run long enough for one."""
    if bar is None and validation.resolve_verbose(
        verbose, time.perf_counter() - started > AUTO_PROGRESS_AFTER
    ):
        bar = keras.utils.Progbar(total, unit_name="candidate")
    return bar


def _run(trial, specs, verbose, started, keep_winner):
    """Every candidate on `trial`: the ranked report and, if asked, the winner's
    `(kernels, initializers)`."""
    specs, skipped = _applicable(trial, specs)
    bar = keras.utils.Progbar(len(specs), unit_name="candidate") if verbose == 1 else None
    results, source, winner, winner_key = [], None, None, None
    for index, spec in enumerate(specs):
        trial.reset()
        used, own, fallback = trial.initialize(spec)
        if not own:
            skipped.append((spec.name, "applies to no layer of the model"))
            continue
        notes = _lsuv_notes(trial) if spec.lsuv else []
        kernels = [to_numpy(b.kernel) for _, b in trial.pairs]
        measured = trial.measure()
        source = measured[0].source
        candidate = _candidate_result(trial, spec, (used, own, fallback), notes, measured)
        results.append(candidate)
        key = _rank_key(candidate, index)
        if keep_winner and (winner_key is None or key < winner_key):
            winner_key, winner = key, (kernels, used)
        bar = _progress_bar(bar, verbose, started, len(specs))
        if bar is not None:
            bar.update(index + 1)
    rank = {id(c): i for i, c in enumerate(results)}
    ranked = sorted(results, key=lambda c: _rank_key(c, rank[id(c)]))
    source = source or f"{_num_samples(trial.x)} samples"
    notes = _unmeasured_notes(trial, ranked) + _tie_notes(ranked)
    report = SuggestionReport(tuple(ranked), tuple(skipped), trial.steps, source, notes=notes)
    return report, winner


def _rank_key(candidate, index):
    """Disqualified last; then by score; a tie on the score goes to the lower loss at
    initialization (where measured), then to the candidates' order."""
    loss = candidate.loss if candidate.loss is not None and math.isfinite(candidate.loss) else None
    return (
        candidate.disqualified is not None,
        candidate.score,
        math.inf if loss is None else loss,
        index,
    )


def _unmeasured_notes(trial, ranked):
    """A note for each term of the score that no candidate could measure on this model
    (its column shows `-` and the term counts 0), and why."""
    measured = [c for c in ranked if c.disqualified is None] or list(ranked)
    if not measured:
        return ()

    def unmeasured(field):
        return all(getattr(c, field) is None for c in measured)

    notes = []
    if unmeasured("activation_drift"):
        notes.append(
            "drift not measured: fewer than two hidden kernel or recurrent layers (it "
            "compares their output std with the first one's); it counts 0"
        )
    if unmeasured("gradient_ratio"):
        why = (
            "no targets `y`"
            if trial.y is None
            else "fewer than two kernel or recurrent layers get a gradient"
        )
        notes.append(f"grad ratio not measured: {why}; it counts 0")
    if unmeasured("sensitivity") and trial.no_sensitivity:
        notes.append(f"sensitivity and spread not measured: {trial.no_sensitivity}; they count 0")
    return tuple(notes)


def _tie_notes(ranked):
    """A note for each group of candidates (not disqualified) with the same score: how
    they were ranked, or that nothing told them apart."""
    notes, groups = [], {}
    for c in ranked:
        if c.disqualified is None:
            groups.setdefault(c.score, []).append(c)
    for score, group in groups.items():
        if len(group) < 2:
            continue
        names = ", ".join(c.name for c in group)
        losses = {c.loss for c in group}
        if None not in losses and len(losses) == len(group):
            how = "ranked by their loss at initialization"
        elif None not in losses and len(losses) > 1:
            how = "ranked by their loss at initialization, then in the candidates' order"
        else:
            how = "nothing measured tells them apart: ranked in the candidates' order"
        notes.append(f"{names} tie at score {score:.3f}: {how}")
    return tuple(notes)
