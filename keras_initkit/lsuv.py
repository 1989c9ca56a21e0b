"""LSUV's data-dependent stage: `lsuv_init`, in one intercepted forward pass.

Layer-sequential unit-variance initialization (Mishkin & Matas, 2016) scales each
kernel, in forward order, until the variance of the layer's output on a batch is
`target_variance`. The published scripts rebuild a sub-model from the input to each
layer and re-run it for every rescale: O(L²·T) layer calls for L layers. Here the
model runs once: each target layer's call is intercepted, the layer is calibrated on
its actual input (upstream layers are already final), and its calibrated output is
handed on. For the built-in kernel layers the output is linear in the kernel, so a
rescale is applied to the measured pre-activation instead of re-running the layer.
"""

import dataclasses
import math
import sys
import warnings

import keras
import numpy as np

from keras_initkit.initializers import LSUV
from keras_initkit.probe import (
    BOUNDED,
    KERNEL_LAYERS,
    as_batches,
    call_linear,
    call_split,
    check_inputs,
    has_activation,
    intercept,
    make_sites,
    no_grad,
    resolve_layers,
)

MEASURES = ("pre_activation", "post_activation")
# A variance at or below this fraction of the target counts as zero (a dead layer):
# rescaling it would multiply the kernel by more than 1e6.
_ZERO = 1e-12
# Calls of the built-in kernel layers are linear in the kernel we scale (and in the
# bias): rescaling by s maps the pre-activation z + b to s·z + b exactly.
_LINEAR_CALLS = frozenset(cls.call for cls in KERNEL_LAYERS)


class LSUVWarning(UserWarning):
    """A layer `lsuv_init` skipped or could not bring to the target variance."""


@dataclasses.dataclass
class LayerResult:
    """What `lsuv_init` did to one layer.

    Attributes:
        name: the layer's display name (prefixed with its parent model's name when
            two target layers share a name).
        variance_before: variance of the measured output before calibration.
        variance_after: variance of the measured output after calibration.
        iterations: rescales applied (0: already within tolerance).
        converged: whether `variance_after` is within tolerance of the target.
        scale: the factor the kernel was multiplied by.
        skipped: why the layer was left unchanged, or `None`.
    """

    name: str
    variance_before: float = math.nan
    variance_after: float = math.nan
    iterations: int = 0
    converged: bool = False
    scale: float = 1.0
    skipped: str | None = None


@dataclasses.dataclass
class LSUVReport:
    """The result of `keras_initkit.lsuv_init`: one record per target layer.

    `str(report)` is a readable table, `report.to_dict()` a JSON-ready dict.

    Attributes:
        layers: a `LayerResult` per target layer, in forward (call) order; each has
            `name`, `variance_before`, `variance_after`, `iterations`,
            `converged`, `scale` and `skipped` (the reason, or `None`).
        source: which data was used, e.g. `"256 samples in 1 batch(es)"`.
        target_variance: the variance aimed at.
        tolerance: the relative tolerance: a layer converged when
            `|variance - target_variance| <= tolerance * target_variance`.
        measure: `"pre_activation"` or `"post_activation"`.
    """

    layers: list
    source: str
    target_variance: float
    tolerance: float
    measure: str

    @property
    def converged(self):
        """True when every target layer converged (a skipped layer did not)."""
        return all(layer.converged for layer in self.layers)

    def __getitem__(self, name):
        """The `LayerResult` of the layer named `name`."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"No layer named {name!r} in this report.")

    def to_dict(self):
        """The report as plain Python values (JSON-serializable)."""
        return {
            "source": self.source,
            "target_variance": self.target_variance,
            "tolerance": self.tolerance,
            "measure": self.measure,
            "converged": self.converged,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
        }

    def __str__(self):
        width = max([5, *(len(layer.name) for layer in self.layers)])
        lines = [
            f"LSUV: {len(self.layers)} layer(s), {self.measure.replace('_', '-')} variance "
            f"{self.target_variance:g} ± {self.tolerance:.0%}, data: {self.source}",
            f"{'Layer':<{width}}  {'var before':>11}  {'var after':>11}  {'iter':>4}  "
            f"{'scale':>9}  status",
        ]
        for r in self.layers:
            status = (
                f"skipped: {r.skipped}"
                if r.skipped
                else ("converged" if r.converged else "NOT converged")
            )
            lines.append(
                f"{r.name:<{width}}  {r.variance_before:>11.4g}  {r.variance_after:>11.4g}  "
                f"{r.iterations:>4}  {r.scale:>9.4g}  {status}"
            )
        failed = [r.name for r in self.layers if not r.converged]
        lines.append(
            "All layers converged." if not failed else f"Not converged: {', '.join(failed)}"
        )
        return "\n".join(lines)


def check_arguments(
    target_variance=1.0,
    tolerance=0.1,
    max_iterations=10,
    measure="pre_activation",
    center=False,
    verbose="auto",
):
    """Validate `lsuv_init`'s scalar arguments; raise `ValueError` naming the bad one.

    `lsuv_init` and `LSUVCallback` both call this, so a bad value fails at once.
    """

    def positive(name, value):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.number))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"Argument `{name}` must be a finite number > 0. Received: {name}={value!r}"
            )

    positive("target_variance", target_variance)
    positive("tolerance", tolerance)
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, (int, np.integer))
        or max_iterations < 1
    ):
        raise ValueError(
            "Argument `max_iterations` must be an int >= 1. "
            f"Received: max_iterations={max_iterations!r}"
        )
    if measure not in MEASURES:
        raise ValueError(
            f"Argument `measure` must be one of {MEASURES}. Received: measure={measure!r}"
        )
    if not isinstance(center, (bool, np.bool_)):
        raise ValueError(f"Argument `center` must be a bool. Received: center={center!r}")
    if verbose not in (0, 1, "auto") or (isinstance(verbose, float)):
        raise ValueError(
            f"Argument `verbose` must be 0, 1 or 'auto'. Received: verbose={verbose!r}"
        )


def _kernel_of(layer):
    """The kernel variable LSUV scales, and the initializer that marks it."""
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return getattr(layer, "pointwise_kernel", None), layer.pointwise_initializer
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return getattr(layer, "kernel", None), layer.depthwise_initializer
    try:
        kernel = getattr(layer, "kernel", None)
    except AttributeError:  # Dense & co. raise it before they are built
        kernel = None
    return kernel, getattr(layer, "kernel_initializer", None)


def _is_linear(layer):
    """True when the layer's pre-activation is exactly `s·z + b` after scaling by s."""
    return (
        type(layer).call in _LINEAR_CALLS
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
    )


def _targets(model, layers):
    if layers is not None:
        chosen = resolve_layers(model, layers, argument="layers")
        for layer in chosen:
            if not isinstance(_kernel_of(layer)[0], keras.Variable):
                raise ValueError(
                    "Argument `layers` must name layers with a kernel variable. "
                    f"Received: layer '{layer.name}' of type {type(layer).__name__}"
                )
        return chosen
    marked = resolve_layers(model, where=lambda layer: isinstance(_kernel_of(layer)[1], LSUV))
    marked = [layer for layer in marked if isinstance(_kernel_of(layer)[0], keras.Variable)]
    return marked or resolve_layers(model, where=lambda layer: isinstance(layer, KERNEL_LAYERS))


def activate(layer, pre):
    """The layer's output from its pre-activation (see `probe.call_linear`)."""
    return layer.activation(pre) if has_activation(layer) else pre


class _Calibration:
    """State of one `lsuv_init` run: the hook, the weight snapshot, the results."""

    def __init__(self, sites, target, tolerance, max_iterations, measure, center, bar):
        self.sites = {id(site.layer): site for site in sites}
        self.target = float(target)
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.post = measure == "post_activation"
        self.center = center
        self.bar = bar
        self.results = {}  # id(layer) -> LayerResult, in call order
        self.snapshot = {}  # id(variable) -> (variable, its value before any change)
        self.pending = []  # (LayerResult, device variance), read in one transfer at the end
        self.biases = {}  # id(layer) -> host copy of the bias of a built-in kernel layer

    def read_biases(self, layers):
        """Bring the biases of the built-in kernel layers to the host, before the pass."""
        for layer in layers:
            bias = getattr(layer, "bias", None)
            if _is_linear(layer) and bias is not None:
                self.biases[id(layer)] = keras.ops.convert_to_numpy(bias).astype(np.float64)

    def keep(self, variable):
        """Copy `variable` before its first change; return the copy.

        The copy stays on the device: `keras.ops.copy` is a real copy on every
        backend (TensorFlow copies a variable's buffer on write while a read of it
        is alive, JAX arrays are immutable, torch clones).
        """
        if id(variable) not in self.snapshot:
            self.snapshot[id(variable)] = (variable, keras.ops.copy(variable))
        return self.snapshot[id(variable)][1]

    def assign(self, variable, value):
        self.keep(variable)
        variable.assign(value)

    def restore(self):
        for variable, value in self.snapshot.values():
            variable.assign(value)

    def within(self, variance):
        return abs(variance - self.target) <= self.tolerance * self.target

    def dead(self, variance):
        return not math.isfinite(variance) or variance <= _ZERO * self.target

    @staticmethod
    def variance(tensor):
        """Variance over all values, in float32 whatever the compute dtype."""
        t = keras.ops.cast(tensor, "float32")
        return keras.ops.mean(keras.ops.square(t - keras.ops.mean(t)))

    def solve(self, measure, variance, result):
        """The paper's loop: `s *= sqrt(target / variance)` until within tolerance."""
        s = 1.0
        while (
            not self.within(variance)
            and result.iterations < self.max_iterations
            and not self.dead(variance)
        ):
            s *= math.sqrt(self.target / variance)
            variance = measure(s)
            result.iterations += 1
        return s, variance

    def hook(self, layer, call, args, kwargs):
        if id(layer) in self.results:  # a shared layer is calibrated on its first call
            return call(*args, **kwargs)
        result = self.results[id(layer)] = LayerResult(self.sites[id(layer)].name)
        pre = call_linear(layer, call, args, kwargs)
        if _is_linear(layer):
            out = self.linear(layer, pre, result)
        else:
            out = self.rerun(layer, call, args, kwargs, pre, result)
        if self.bar is not None:
            self.bar.update(len(self.results))
        return out

    def linear(self, layer, pre, result):
        """A built-in kernel layer: rescales are applied to the measured output.

        Its pre-activation is `z + b`; with the kernel scaled by s it is exactly
        `s·z + b`. With unit means m_c (over the axes the bias spans) and overall
        variance v, its variance is `s²·(v - var(m)) + var_c(s·(m_c - b_c) + b_c)`,
        or `s²·v` for a zero bias: the pre-activation loop runs on the host, from
        one reduction and one read.
        """
        kernel, bias = _kernel_of(layer)[0], getattr(layer, "bias", None)
        b = self.biases.get(id(layer))
        center = self.center and bias is not None
        p = keras.ops.cast(pre, "float32")
        total = self.variance(p)
        if center or (b is not None and np.any(b)):
            rank = len(p.shape)
            if getattr(layer, "data_format", None) == "channels_first":
                shape = (1, -1) + (1,) * (rank - 2)
            else:
                shape = (1,) * (rank - len(bias.shape)) + tuple(bias.shape)
            axes = tuple(i for i, d in enumerate(shape) if d == 1)
            mean = keras.ops.mean(p, axis=axes, keepdims=True)
            stats = keras.ops.concatenate(
                [keras.ops.reshape(total, (1,)), keras.ops.reshape(mean, (-1,))]
            )
            beta = keras.ops.reshape(keras.ops.cast(bias, "float32"), shape)
        else:
            stats, mean, beta, b = total, None, None, None
        # The one host read of this layer (variance, and unit means if needed).
        host = keras.ops.convert_to_numpy(stats).astype(np.float64)
        v, m = float(host.ravel()[0]), host.ravel()[1:]
        w = max(v - float(np.var(m)), 0.0) if mean is not None else v

        def transform(s):
            if center:
                new = s * (p - mean)
            elif beta is not None:
                new = s * p + (1.0 - s) * beta
            else:
                new = s * p
            return keras.ops.cast(new, pre.dtype)

        def measure(s):
            if self.post:
                return float(self.variance(activate(layer, transform(s))))
            if center:
                return s * s * w
            if b is None:
                return s * s * v
            return s * s * w + float(np.var(s * (m - b) + b))

        out = activate(layer, pre) if self.post else None
        result.variance_before = float(self.variance(out)) if self.post else v
        if self.dead(result.variance_before):
            return self.skip(result, out, layer, pre)
        s, after = self.solve(measure, measure(1.0) if center else result.variance_before, result)
        result.scale = s
        if s == 1.0 and not center:
            result.variance_after = after
            result.converged = self.within(after)
            return activate(layer, pre) if out is None else out
        self.assign(kernel, kernel * keras.ops.cast(s, kernel.dtype))
        if center:
            self.assign(bias, (-s * (m - b)).reshape(bias.shape).astype(bias.dtype))
        new = transform(s)
        out = activate(layer, new)
        # Measured on the tensor handed on; read with the others at the end.
        self.pending.append((result, self.variance(out if self.post else new)))
        return out

    def rerun(self, layer, call, args, kwargs, pre, result):
        """Any other layer: rescale the kernel and call the layer again."""
        kernel = _kernel_of(layer)[0]
        latest = {"pre": pre, "out": activate(layer, pre)}

        def measure(s):
            if s != 1.0:
                original = self.keep(kernel)
                self.assign(kernel, original * keras.ops.cast(s, original.dtype))
                latest["pre"], latest["out"] = call_split(layer, call, args, kwargs)
            return float(self.variance(latest["out" if self.post else "pre"]))

        result.variance_before = measure(1.0)
        if self.dead(result.variance_before):
            return self.skip(result, latest["out"], layer, pre)
        result.scale, result.variance_after = self.solve(measure, result.variance_before, result)
        result.converged = self.within(result.variance_after)
        return latest["out"]

    def skip(self, result, out, layer, pre):
        finite = math.isfinite(result.variance_before)
        result.skipped = "zero variance" if finite else "non-finite output"
        return activate(layer, pre) if out is None else out

    def finish(self):
        """Read every deferred variance in one transfer and decide convergence."""
        if self.pending:
            values = keras.ops.convert_to_numpy(keras.ops.stack([v for _, v in self.pending]))
            for (result, _), value in zip(self.pending, values):
                result.variance_after = float(value)
                result.converged = self.within(float(value))
        self.pending = []


def lsuv_init(
    model,
    x,
    *,
    layers=None,
    target_variance=1.0,
    tolerance=0.1,
    max_iterations=10,
    measure="pre_activation",
    center=False,
    verbose="auto",
):
    """Scale kernels, layer by layer, until each layer's output variance on `x` is 1.

    The data-dependent stage of layer-sequential unit-variance initialization
    (Mishkin & Matas, 2016). Initialize the kernels first (orthonormal, for
    instance with `keras_initkit.initializers.LSUV`), then call this once,
    before training, on a batch of real inputs. In forward order, each target
    layer's kernel is multiplied by `sqrt(target_variance / variance)` until the
    variance (over all values of the batch) of the layer's output is within
    `tolerance * target_variance` of `target_variance` — a relative tolerance,
    the same as the absolute margin of the paper's code at the default target
    of 1 — with at most `max_iterations` rescales per layer.

    It runs the model once (eagerly, `training=False`): every target layer's call
    is intercepted and the layer is calibrated on its actual input, then its
    calibrated output is handed on, so each layer sees final upstream layers.
    That costs O(L) layer calls for L layers, where the published scripts, which
    rebuild a sub-model per layer and iteration, cost O(L²·T). For the built-in
    kernel layers the output is linear in the kernel: a rescale by `s` maps the
    pre-activation `z + b` to `s·z + b` exactly, so the layer is not re-run; the
    variance after calibration is measured on that tensor (it differs from a
    re-run only by float rounding).

    Targets are the layers whose kernel initializer is a
    `keras_initkit.initializers.LSUV` instance or, when the model has none,
    every `Dense`, `EinsumDense`, `Conv*`, `Conv*Transpose`, `SeparableConv*`
    (its pointwise kernel) and `DepthwiseConv*` (its depthwise kernel) layer.
    A layer called more than once (shared) is calibrated on its first call.
    Batch-normalization moving statistics are not touched. Biases are left
    alone unless `center=True`.

    A layer whose output has zero variance (below `1e-12 * target_variance`:
    a dead layer) or non-finite values is skipped with a warning, and so is a
    layer the pass never calls; layers still outside the tolerance after
    `max_iterations` rescales are named in one warning. Both are recorded in
    the report. If anything fails during the pass (an exception, or a
    `KeyboardInterrupt`), every weight is restored before the error propagates.

    Args:
        model: A Keras model (Sequential, Functional, nested or subclassed). An
            unbuilt model is built by calling it on `x`.
        x: Input data: a NumPy array or tensor, a list or dict of them (multiple
            inputs), a `tf.data.Dataset` or a `keras.utils.PyDataset` (its first
            batch is used; `(x, y)` elements are fine, `y` is ignored). All of it
            (or the first batch) is used at once, so pass a few hundred samples.
        layers: Layer names or layer objects to calibrate, or `None` for the
            targets above. Defaults to `None`.
        target_variance: The variance to reach. Defaults to `1.0`.
        tolerance: Relative tolerance: a layer is done when
            `|variance - target_variance| <= tolerance * target_variance`.
            Defaults to `0.1`.
        max_iterations: Most rescales per layer. Defaults to `10`.
        measure: `"pre_activation"` measures the layer's output before its own
            activation (`kernel·x + bias`, as in the paper's code);
            `"post_activation"` after it. After a bounded activation the
            post-activation variance is bounded too: below 1 after `tanh`
            (0.25 after `sigmoid`), so a target of 1 is unreachable — the
            kernels only grow until the units saturate — and a warning says so.
            Defaults to `"pre_activation"`.
        center: Also set the bias so the measured output has zero mean per unit
            (layers without a bias are only scaled; a custom layer's bias is
            never touched). Defaults to `False`.
        verbose: `0` silent, `1` a Keras progress bar over the target layers,
            `"auto"` a progress bar only when there are more than 10 target
            layers and standard output is a terminal. Defaults to `"auto"`.

    Returns:
        An `LSUVReport`: per layer the variance before and after, the iterations
        used, whether it converged, or why it was skipped.

    Raises:
        ValueError: for NaN or Inf in `x`, an empty batch, inputs that do not fit
            the model, no layer to calibrate, or a bad argument — always before any
            weight changed.

    ```python
    model = keras.Sequential([
        keras.Input((784,)),
        *[keras.layers.Dense(
            256, activation="tanh",
            kernel_initializer=keras_initkit.initializers.LSUV(seed=i))
          for i in range(20)],
        keras.layers.Dense(10, activation="softmax"),
    ])
    report = keras_initkit.lsuv_init(model, x_train[:512])
    print(report)
    ```

    Reference:

    - [Mishkin & Matas, 2016. All you need is a good init](https://arxiv.org/abs/1511.06422)
    """
    check_arguments(target_variance, tolerance, max_iterations, measure, center, verbose)
    batches, source = as_batches(x, max_batches=1, argument="x")
    batch = batches[0][0]
    if not model.built:
        try:
            model(batch, training=False)
        except Exception as e:
            raise ValueError(
                f"Argument `x` does not fit the model: building it on `x` failed with "
                f"{type(e).__name__}: {e}. Received: x of shape(s) "
                f"{[tuple(a.shape) for a in keras.tree.flatten(batch)]}"
            ) from e
    check_inputs(model, [(batch, None)], argument="x")
    targets = _targets(model, layers)
    if not targets:
        raise ValueError(
            "`lsuv_init` found no layer to calibrate: the model has no layer with a "
            "kernel (Dense, EinsumDense, Conv*, SeparableConv*, DepthwiseConv*). "
            f"Received: a model with layers {[layer.name for layer in model.layers]}"
        )
    sites = make_sites(model, targets)
    if measure == "post_activation":
        for site in sites:
            low, high = BOUNDED.get(site.activation, (None, None))
            if low is not None and target_variance >= ((high - low) / 2) ** 2:
                warnings.warn(
                    f"Layer '{site.name}' ends with {site.activation}, whose output "
                    f"variance is below {((high - low) / 2) ** 2:g}: the post-activation "
                    f"target {target_variance:g} is unreachable and rescaling only "
                    "saturates the units. Use measure='pre_activation'.",
                    LSUVWarning,
                    stacklevel=2,
                )
    if verbose == "auto":
        verbose = int(len(sites) > 10 and sys.stdout.isatty())
    bar = keras.utils.Progbar(len(sites), unit_name="layer") if verbose else None
    run = _Calibration(sites, target_variance, tolerance, max_iterations, measure, center, bar)
    run.read_biases(targets)
    try:
        with intercept(targets, run.hook), no_grad():
            model(batch, training=False)
        run.finish()
    except BaseException as e:
        run.restore()
        if type(e).__name__ == "InvalidArgumentError":  # TensorFlow's shape errors
            raise ValueError(
                f"Argument `x` does not fit the model: the forward pass failed with "
                f"{type(e).__name__}: {e}. Received: x of shape(s) "
                f"{[tuple(a.shape) for a in keras.tree.flatten(batch)]}"
            ) from e
        raise
    results = list(run.results.values())
    for site in sites:
        if id(site.layer) not in run.results:
            results.append(LayerResult(site.name, skipped="not called in the forward pass"))
    if bar is not None and len(run.results) < len(sites):
        bar.update(len(sites), finalize=True)
    report = LSUVReport(results, source, float(target_variance), float(tolerance), measure)
    skipped = [r for r in results if r.skipped]
    for r in skipped:
        warnings.warn(
            f"LSUV skipped layer '{r.name}': {r.skipped} "
            f"(variance {r.variance_before:.3g}). Its kernel is unchanged.",
            LSUVWarning,
            stacklevel=2,
        )
    failed = [r.name for r in results if not r.converged and not r.skipped]
    if failed:
        warnings.warn(
            f"LSUV did not reach variance {target_variance:g} ± {tolerance:.0%} within "
            f"{max_iterations} iteration(s) for layer(s): {', '.join(failed)}.",
            LSUVWarning,
            stacklevel=2,
        )
    return report
