"""Per-layer gradient flow: gradient norms of the training loss, without a training step.

`layer_gradients` (one call) and `GradientProbe` (reusable, compiled once) compute, for
every layer that owns trainable weights, the norm of the gradient of the loss with
respect to those weights on probe data. No optimizer step is taken and no variable
changes. Definitions (per layer, over the layer's *own* trainable weights, i.e. not
those of its sublayers, taken together as one vector):

- `gradient_norm`: ‖g‖₂, where g is the gradient of the mean loss over all probe
  samples (batches are pooled by sample count, so several batches give the gradient
  of the concatenated data, not an average of per-batch norms).
- `weight_norm`: ‖w‖₂ of the same weights.
- `update_ratio` (only when the model's optimizer is SGD, and ‖w‖ > 0):
  `learning_rate × ‖g‖ / ‖w‖`, the relative size of the optimizer's step at its current
  learning rate (its first step; momentum μ makes a steady step up to 1 / (1 − μ)
  times larger). It is the scale the usual rule of thumb (updates ≈ 1e-3 of the
  weights) refers to. Absent for every other optimizer: adaptive ones (Adam, RMSprop,
  Adagrad, Lion…) rescale each coordinate, so their step is about the learning rate
  per coordinate whatever ‖g‖ is, and ‖g‖ does not give its size (on ResNet50 at
  initialization under Adam, `conv1_conv`'s ‖g‖ / ‖w‖ is 1,130: an SGD step at Adam's
  learning rate would be 1.13× the weights, Adam's own is about 4%).

The loss is what the optimizer would minimize: the compiled loss (`model.compute_loss`,
so custom `compute_loss` overrides are honoured) or the explicit `loss=`, plus the
model's regularization and `add_loss` terms. Like every probe it is computed in
`mode="training"` by default: the forward pass normalizes batch norm with the batch's
statistics, as a training step does, while stochastic layers (dropout, noise) run as in
inference so the result is deterministic; `mode="inference"` uses the moving statistics
(`training=False`). State updates (moving statistics, seed-generator state, metric
trackers) are captured in a `keras.StatelessScope` and discarded: every model,
optimizer and seed-generator variable is left bit-identical.

Backends (`probe.backend`): TensorFlow (a `tf.GradientTape` inside a `tf.function`,
traced once per input signature), JAX (`jax.value_and_grad` of a stateless forward pass,
jitted) and torch (`torch.autograd.grad` of the same stateless pass, eager; no `.grad`
is touched). The gradients of several batches are pooled on device (a sample-weighted
mean: the gradient of the concatenated data); the norms are the statistics of a probe
`Runner`, compiled once and brought to the host in its one transfer per run.
"""

import contextlib
import dataclasses
import inspect

import keras
import numpy as np

from keras_initkit import _keras_private
from keras_initkit.probe import backend
from keras_initkit.probe.backend import to_numpy
from keras_initkit.probe.data import DataMismatch, as_batches, check_inputs, error_summary
from keras_initkit.probe.engine import (
    MODES,
    Probe,
    ProbeResult,
    Runner,
    in_forward_order,
    stochastic_layers,
    training_semantics,
)
from keras_initkit.probe.intercept import intercept
from keras_initkit.probe.selection import make_sites, resolve_layers
from keras_initkit.validation import one_of, positive_int


@dataclasses.dataclass
class GradientResult(ProbeResult):
    """What one gradient run measured: a `ProbeResult` plus the loss.

    Attributes:
        sites: the measured `Site`s, in forward order (order of first calls).
        metrics: `site name -> {"gradient_norm", "weight_norm"[, "update_ratio"]}`.
        source: which data was used, e.g. `"512 samples in 1 batch(es)"`.
        loss: the mean loss over the probe samples.
        learning_rate: the optimizer's current learning rate, or `None` when the model
            has no optimizer (or one without a learning rate).
        forward: the forward `Probe`'s result measured in the same pass
            (`GradientProbe(forward=...)`), or `None`.
    """

    loss: float = float("nan")
    learning_rate: float | None = None
    forward: ProbeResult | None = None


def own_trainable_weights(layer):
    """The trainable weights `layer` owns itself, not those of its sublayers (a
    recurrent layer owns its cell's: the cell runs inside its loop)."""
    if isinstance(layer, keras.layers.RNN):
        return list(layer.trainable_weights)
    inner = {id(w) for sub in _keras_private.sublayers(layer) for w in sub.trainable_weights}
    return [w for w in layer.trainable_weights if id(w) not in inner]


def _loss_function(loss):
    if loss is None:
        return None
    if isinstance(loss, str):
        return keras.losses.get(loss)
    if callable(loss):
        return loss
    raise ValueError(
        "Argument `loss` must be None, a loss name, a `keras.losses.Loss` or a "
        f"callable `loss(y_true, y_pred)`. Received: loss={loss!r}"
    )


def learning_rate(model):
    """The compiled optimizer's current learning rate (a variable or tensor; a
    `LossScaleOptimizer` gives its inner optimizer's), or None without one."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "learning_rate"):
        return None
    return optimizer.learning_rate


class GradientProbe(Runner):
    """Per-layer gradient norms of the training loss on probe data.

    Computes the gradient of the loss with respect to each selected layer's own
    trainable weights, without an optimizer step and without changing any variable
    (see the module docstring for the definitions of `gradient_norm`, `weight_norm`
    and `update_ratio`). Build it once and call `run` repeatedly: the gradient
    function is compiled once repeated use pays for the trace (`backend.Lazy`) and
    reused.

    Args:
        model: a built Keras model.
        loss: the loss to differentiate: a loss name, a `keras.losses.Loss` or a
            callable `loss(y_true, y_pred)`; the model's regularization and
            `add_loss` terms are added. `None` uses the compiled loss. Defaults to
            `None`.
        layers: layer names or objects to report; `None` for every layer that owns
            trainable weights. Defaults to `None`.
        batch_size: split array data into chunks of this many samples; `None` runs all
            samples at once. Defaults to `None`.
        mode: `"training"` (batch norm with batch statistics, stochastic layers
            deterministic) or `"inference"` (`training=False`); state updates are
            discarded either way. Defaults to `"training"`.
        forward: a forward `Probe` of the same model and mode to run within the
            gradient pass: its statistics come with the gradients
            (`GradientResult.forward`) from one forward pass instead of two. Defaults
            to `None`.

    ```python
    probe = keras_initkit.probe.gradients.GradientProbe(model)
    result = probe.run((x, y))
    result.metrics["dense_1"]["gradient_norm"]
    ```
    """

    LIMIT = "GRADIENT_EAGER_CALLS"  # its norms compile when its gradient step does

    def __init__(
        self, model, *, loss=None, layers=None, batch_size=None, mode="training", forward=None
    ):
        if not model.built:
            raise ValueError(
                "The model must be built before its gradients can be measured: call it "
                f"on a batch or call `model.build(...)`. Received: unbuilt model '{model.name}'"
            )
        super().__init__(model)
        # Fails at once on a backend that cannot differentiate (NotImplementedError).
        self._step = backend.current().value_and_grad(
            self._loss_value, model, list(model.trainable_variables)
        )
        self.loss = loss
        self.batch_size = positive_int(batch_size, "batch_size")
        self.mode = one_of(mode, "mode", MODES)
        self._stochastic = stochastic_layers(model)
        if forward is not None and not isinstance(forward, Probe):
            raise ValueError(
                "Argument `forward` must be None or a `keras_initkit.probe.Probe`. "
                f"Received: forward of type {type(forward).__name__}"
            )
        if forward is not None and (forward.model is not model or forward.mode != self.mode):
            raise ValueError(
                "Argument `forward` must be a Probe of the same model and mode. Received: "
                f"a Probe of model '{forward.model.name}' in mode {forward.mode!r} for "
                f"model '{model.name}' in mode {self.mode!r}"
            )
        self.forward = forward
        self._loss_fn = _loss_function(loss)
        if self._loss_fn is None and not _keras_private.has_loss(model):
            raise ValueError(
                "Gradients need a loss: compile the model with a `loss` or pass `loss=`. "
                f"Received: loss=None for a model without a compiled loss ('{model.name}')"
            )
        chosen = resolve_layers(model, layers, where=own_trainable_weights)
        self._variables = list(model.trainable_variables)
        index = {id(v): i for i, v in enumerate(self._variables)}
        self._groups = []
        for site in make_sites(model, chosen):
            idx = [index[id(w)] for w in own_trainable_weights(site.layer) if id(w) in index]
            if idx:
                self._groups.append((site, idx))
        self._called = None  # the sites' names in forward order, once a pass has run
        # The norms' layout: the variables in group order, and each one's group index.
        self._order = [i for _, idx in self._groups for i in idx]
        self._segments = np.repeat(
            np.arange(len(self._groups), dtype="int32"), [len(idx) for _, idx in self._groups]
        )
        self._loss_copy = None  # (model's unbuilt compiled loss, the copy used instead)

    @property
    def sites(self):
        """The measured `Site`s: in forward order once a pass has run, else in the
        model's layer order."""
        return in_forward_order([site for site, _ in self._groups], self._called)

    def _loss_value(self, x, y):
        """The scalar loss; runs inside a StatelessScope that collects losses."""
        model = self.model
        # The forward order, from the first pass (traced or eager) that completes.
        called, names = {}, {id(site.layer): site.name for site, _ in self._groups}

        def record(layer, call, args, kwargs):
            called.setdefault(names[id(layer)])
            return call(*args, **kwargs)

        recording = self._called is None
        # The caller's scope (`value_and_grad`) already records and drops state updates.
        with (
            training_semantics(model, self.mode, self._stochastic, discard=False) as training,
            intercept([site.layer for site, _ in self._groups], record)
            if recording
            else contextlib.nullcontext(),
        ):
            if self.forward is None:
                y_pred, aux = model(x, training=training), keras.ops.zeros((0,), "float32")
            else:
                y_pred, aux = self.forward.forward(x, training)
        if recording:
            self._called = list(called)
        return keras.ops.cast(self._loss(x, y, y_pred, training), "float32"), aux

    def _loss(self, x, y, y_pred, training):
        """The loss the optimizer would minimize on `y_pred`: the compiled one (custom
        `compute_loss` overrides honoured) or `loss=`, plus the model's own losses."""
        model = self.model
        if self._loss_fn is None:
            kwargs = {"x": x, "y": y, "y_pred": y_pred, "sample_weight": None}
            if "training" in inspect.signature(model.compute_loss).parameters:
                kwargs["training"] = training
            return model.compute_loss(**kwargs)
        values = [
            keras.ops.mean(self._loss_fn(t, p))
            for t, p in zip(keras.tree.flatten(y), keras.tree.flatten(y_pred))
        ]
        value = keras.ops.sum(keras.ops.stack(values)) if len(values) > 1 else values[0]
        extra = list(model.losses)
        if extra:
            value = value + keras.ops.sum(
                keras.ops.stack([keras.ops.cast(e, value.dtype) for e in extra])
            )
        return value

    @contextlib.contextmanager
    def _model_compile_loss_kept(self):
        """Compute with a private copy of the model's compiled loss while that is unbuilt
        (see `_keras_private.unbuilt_loss_copy`: building it would change a later fit)."""
        compiled = _keras_private.compiled_loss(self.model)
        if self._loss_fn is not None or compiled is None or getattr(compiled, "built", True):
            yield
            return
        if self._loss_copy is None or self._loss_copy[0] is not compiled:
            copy = _keras_private.unbuilt_loss_copy(self.model)
            if copy is None:
                yield
                return
            self._loss_copy = (compiled, copy)
        previous = _keras_private.swap_compiled_loss(self.model, self._loss_copy[1])
        try:
            yield
        finally:
            _keras_private.swap_compiled_loss(self.model, previous)

    def _lazy(self):
        return [self._vector, self._step]

    def statistics(self, grads, extra):
        """Per group ‖g‖ and ‖w‖, and the loss and learning rate: `Runner` statistics."""
        stats = {"": {"run": {name: keras.ops.cast(v, "float32") for name, v in extra.items()}}}
        if not self._groups:
            return stats
        # One vector per norm, a group per entry: a squared norm per tensor (one op on
        # TensorFlow), summed per group by one segment sum. Per-group sums of per-tensor
        # sums cost ~1600 ops for ResNet50's 161 groups, this ~700.
        groups = keras.ops.convert_to_tensor(self._segments)
        squared_norms = backend.current().squared_norms
        weights = [v.value for v in self._variables]
        stats["norms"] = {
            "norms": {
                name: keras.ops.sqrt(
                    keras.ops.segment_sum(
                        squared_norms([tensors[i] for i in self._order]),
                        groups,
                        num_segments=len(self._groups),
                    )
                )
                for name, tensors in (("gradient_norm", grads), ("weight_norm", weights))
            }
        }
        return stats

    def _learning_rate(self):
        return learning_rate(self.model)

    def _steps_along_gradient(self):
        """Whether the optimizer's step is `learning_rate × g` (SGD, also inside a
        `LossScaleOptimizer`): only then does ‖g‖ give the step's size."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        return isinstance(optimizer, keras.optimizers.SGD)

    def run(self, data, *, max_batches=None, argument="data"):
        """Measure gradients on `data` and return a `GradientResult`.

        `data` is anything the probe accepts with targets: `(x, y)` arrays, a
        `tf.data.Dataset` or `keras.utils.PyDataset` yielding `(x, y)`. Sample weights
        are ignored.
        """
        batches, source = as_batches(
            data, batch_size=self.batch_size, max_batches=max_batches, argument=argument
        )
        return self.run_batches(batches, source, argument=argument)

    def _check_batches(self, batches, argument):
        check_inputs(self.model, batches, argument)
        for i, (_, y) in enumerate(batches):
            if y is None:
                raise ValueError(
                    f"Gradients need targets: `{argument}` must give `(x, y)` pairs. "
                    f"Received: no targets in batch {i}"
                )
        self._check_labels(batches)

    def _check_labels(self, batches):
        """Raise where a sparse categorical loss gets labels outside its classes: JAX
        computes a loss on them without a word (an all-zero one-hot row)."""
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        name = loss if isinstance(loss, str) else getattr(loss, "name", None)
        name = name or getattr(loss, "__name__", None)
        outputs = getattr(self.model, "outputs", None) or ()
        if name != "sparse_categorical_crossentropy" or len(outputs) != 1:
            return
        classes = outputs[0].shape[-1]
        ignored = getattr(loss, "ignore_class", None)
        for i, (_, y) in enumerate(batches):
            # Staged probe batches are device tensors (a CUDA tensor has no __array__).
            labels = to_numpy(keras.tree.flatten(y)[0])
            if ignored is not None:
                labels = labels[labels != ignored]
            if classes and labels.size and (labels.min() < 0 or labels.max() >= classes):
                raise DataMismatch(
                    f"The targets must be class indices in [0, {classes}) for the sparse "
                    f"categorical loss on {classes} outputs. Received: labels from "
                    f"{labels.min():g} to {labels.max():g} in batch {i}"
                )

    def _unfit(self, batch, argument):
        """A `ValueError` saying what of `batch` does not fit where the probe failed:
        the inputs where the model's own forward pass fails on them, the targets where
        its loss fails on them (a one-hot `y` for a sparse loss); None where neither
        does alone. Run eagerly, its state updates discarded."""
        x, y = batch

        def shapes(tree):
            return keras.tree.map_structure(lambda a: tuple(a.shape), tree)

        with keras.StatelessScope(), self._model_compile_loss_kept():
            try:
                y_pred = self.model(x, training=False)
            except Exception as error:
                return DataMismatch(
                    f"Argument `{argument}` does not fit the model: its forward pass failed "
                    f"with {error_summary(error)}. Received: inputs of shape(s) {shapes(x)}"
                )
            try:
                self._loss(x, y, y_pred, training=False)
            except Exception as error:
                if not all(np.all(np.isfinite(to_numpy(p))) for p in keras.tree.flatten(y_pred)):
                    return ValueError(
                        "The model's outputs are not finite (NaN or inf: the network has "
                        "diverged), and its loss failed on them with "
                        f"{error_summary(error)}. `keras_initkit.diagnose(model, x)`, "
                        "without targets, names the layers where the NaN starts"
                    )
                return DataMismatch(
                    f"The targets, of shape(s) {shapes(y)}, do not fit the model's loss for "
                    f"outputs of shape(s) {shapes(y_pred)} (a one-hot `y` for a sparse loss, "
                    f"or the reverse?): it failed with "
                    f"{error_summary(error)}"
                )
        return None

    def _mean_gradient(self, batches):
        """`(gradient, loss, forward vectors)`: the gradient of the mean loss over every
        sample of `batches`, on device, and each batch's packed forward statistics."""
        total, acc, loss_sum, auxes = 0.0, None, None, []
        with backend.current().no_grad(), self._model_compile_loss_kept():
            if len(batches) == 1:  # its gradient is the mean gradient: no scaling
                loss, grads, aux = self._step(*batches[0])
                return grads, loss, [aux]
            for i, (x, y) in enumerate(batches):
                n = float(keras.tree.flatten(x)[0].shape[0])
                loss, grads, aux = self._step(x, y, upcoming=len(batches) - i)
                auxes.append(aux)
                scaled = [keras.ops.multiply(g, n) for g in grads]
                acc = scaled if acc is None else [a + s for a, s in zip(acc, scaled)]
                loss_sum = loss * n if loss_sum is None else loss_sum + loss * n
                total += n
        return [a / total for a in acc], loss_sum / total, auxes

    def run_batches(self, batches, source="", *, argument="data", checked=False):
        """Measure gradients on `(x, y)` batches from `as_batches` (host arrays, or the
        device tensors a monitor staged). `checked`: these batches passed the checks of
        an earlier call (a monitor's fixed probe batches after its first update), which
        are skipped: reading the labels back would sync with the device every update."""
        if not checked:
            self._check_batches(batches, argument)
        try:
            grads, loss, auxes = self._mean_gradient(batches)
        except Exception as error:
            unfit = self._unfit(batches[0], argument)
            if unfit is None:
                raise
            raise unfit from error
        lr = self._learning_rate()
        extra = {"loss": loss} if lr is None else {"loss": loss, "learning_rate": lr}
        extra = {k: keras.ops.cast(v, "float32") for k, v in extra.items()}
        with backend.current().no_grad():
            (host,) = self.host([self.vector(grads, extra)])  # the one transfer
        run = host[""]["run"]
        norms = host.get("norms", {}).get("norms", {})
        metrics, along = {}, self._steps_along_gradient()
        for index, (site, _) in enumerate(self._groups):
            values = {k: float(v[index]) for k, v in norms.items()}
            if along and lr is not None and values["weight_norm"] > 0:
                values["update_ratio"] = float(run["learning_rate"]) * (
                    values["gradient_norm"] / values["weight_norm"]
                )
            metrics[site.name] = values
        return GradientResult(
            sites=list(self.sites),
            metrics=metrics,
            source=source,
            loss=float(run["loss"]),
            learning_rate=None if lr is None else float(run["learning_rate"]),
            forward=None if self.forward is None else self.forward.result(auxes, batches, source),
        )


def layer_gradients(
    model, data, *, loss=None, layers=None, batch_size=None, max_batches=None, mode="training"
):
    """Per-layer gradient norms of the training loss on `data`, without a training step.

    One-call form of `GradientProbe`: `GradientProbe(model, ...).run(data)`. Returns
    a `GradientResult` whose `metrics` map each layer that owns trainable weights to
    `{"gradient_norm", "weight_norm"}` plus `"update_ratio"` when the model has an
    optimizer. No variable of the model, its optimizer or its seed generators changes.

    Args:
        model: a built Keras model.
        data: `(x, y)` arrays, or a `tf.data.Dataset` / `keras.utils.PyDataset`
            yielding `(x, y)`.
        loss: the loss to differentiate; `None` uses the compiled loss. Defaults to
            `None`.
        layers: layer names or objects to report; `None` for every layer with its own
            trainable weights. Defaults to `None`.
        batch_size: split array data into chunks of this many samples. Defaults to
            `None` (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.
        mode: `"training"` or `"inference"` (see `GradientProbe`). Defaults to
            `"training"`.

    ```python
    result = keras_initkit.probe.gradients.layer_gradients(model, (x, y))
    norms = result.metric("gradient_norm")
    ```
    """
    probe = GradientProbe(model, loss=loss, layers=layers, batch_size=batch_size, mode=mode)
    return probe.run(data, max_batches=max_batches)


__all__ = [
    "GradientProbe",
    "GradientResult",
    "check_inputs",
    "layer_gradients",
    "own_trainable_weights",
]
