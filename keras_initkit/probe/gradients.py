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
- `update_ratio` (only when the model has an optimizer, and ‖w‖ > 0):
  `learning_rate × ‖g‖ / ‖w‖`, the relative size of the step plain SGD would take at
  the optimizer's current learning rate. It is the scale the usual rule of thumb
  (updates ≈ 1e-3 of the weights) refers to; for adaptive optimizers (Adam,
  RMSprop…) the actual step differs, as they rescale each coordinate.

The loss is what the optimizer would minimize: the compiled loss (`model.compute_loss`,
so custom `compute_loss` overrides are honoured) or the explicit `loss=`, plus the
model's regularization and `add_loss` terms. It is computed with `training=False`
semantics by default, the same as every probe: batch norm uses its moving statistics,
dropout is off. With `training=True` the forward pass runs in training mode (batch norm
normalizes by batch statistics, dropout is on), which is the gradient of an actual
training step; its state updates (moving statistics, seed-generator state, metric
trackers) are captured in a `keras.StatelessScope` and discarded. Either way every
model, optimizer and seed-generator variable is left bit-identical.

Backends: TensorFlow (a `tf.GradientTape` inside a `tf.function`, traced once per input
signature), JAX (`jax.value_and_grad` of a stateless forward pass, jitted) and torch
(`torch.autograd.grad` of the same stateless pass, eager; no `.grad` is touched). The
gradients of several batches are summed on device; the norms come to the host in one
transfer per run.
"""

import contextlib
import dataclasses
import inspect

import keras
import numpy as np

from keras_initkit.probe.data import as_batches, check_inputs, check_positive_int
from keras_initkit.probe.engine import ProbeResult
from keras_initkit.probe.selection import make_sites, resolve_layers

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


@dataclasses.dataclass
class GradientResult(ProbeResult):
    """What one gradient run measured: a `ProbeResult` plus the loss.

    Attributes:
        sites: the measured `Site`s, in the model's layer order.
        metrics: `site name -> {"gradient_norm", "weight_norm"[, "update_ratio"]}`.
        source: which data was used, e.g. `"512 samples in 1 batch(es)"`.
        loss: the mean loss over the probe samples.
        learning_rate: the optimizer's current learning rate, or `None` when the model
            has no optimizer.
    """

    loss: float = float("nan")
    learning_rate: float | None = None


def own_trainable_weights(layer):
    """The trainable weights `layer` owns itself, not those of its sublayers."""
    inner = {
        id(w)
        for sub in layer._flatten_layers(include_self=False, recursive=True)
        for w in sub.trainable_weights
    }
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


def _has_custom_compute_loss(model):
    return type(model).compute_loss is not keras.Model.compute_loss


class GradientProbe:
    """Per-layer gradient norms of the training loss on probe data.

    Computes the gradient of the loss with respect to each selected layer's own
    trainable weights, without an optimizer step and without changing any variable
    (see the module docstring for the definitions of `gradient_norm`, `weight_norm`
    and `update_ratio`). Build it once and call `run` repeatedly: the gradient
    function is compiled on the first call and reused.

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
        training: run the forward pass in training mode (batch statistics, dropout),
            discarding its state updates. Defaults to `False`.

    ```python
    probe = keras_initkit.probe.gradients.GradientProbe(model)
    result = probe.run((x, y))
    result.metrics["dense_1"]["gradient_norm"]
    ```
    """

    def __init__(self, model, *, loss=None, layers=None, batch_size=None, training=False):
        backend = keras.backend.backend()
        if backend not in SUPPORTED_BACKENDS:
            raise NotImplementedError(
                "Gradient statistics support the TensorFlow, JAX and torch backends only. "
                f"Received: backend='{backend}'"
            )
        if not model.built:
            raise ValueError(
                "The model must be built before its gradients can be measured: call it "
                f"on a batch or call `model.build(...)`. Received: unbuilt model '{model.name}'"
            )
        check_positive_int(batch_size, "batch_size")
        self.model = model
        self.loss = loss
        self.batch_size = batch_size
        self.training = bool(training)
        self._loss_fn = _loss_function(loss)
        if (
            self._loss_fn is None
            and getattr(model, "_compile_loss", None) is None
            and not _has_custom_compute_loss(model)
        ):
            raise ValueError(
                "Gradients need a loss: compile the model with a `loss` or pass `loss=`. "
                f"Received: loss=None for a model without a compiled loss ('{model.name}')"
            )
        chosen = resolve_layers(model, layers, where=lambda layer: own_trainable_weights(layer))
        self.sites = make_sites(model, chosen)
        self._variables = list(model.trainable_variables)
        index = {id(v): i for i, v in enumerate(self._variables)}
        self._groups = []
        for site in self.sites:
            idx = [index[id(w)] for w in own_trainable_weights(site.layer) if id(w) in index]
            if idx:
                self._groups.append((site, idx))
        self.sites = [site for site, _ in self._groups]
        self._step = None
        self._norms = None
        self._loss_copy = None  # (model's unbuilt compiled loss, the copy used instead)

    # -- the loss, shared by both backends -------------------------------------------

    def _loss_value(self, x, y):
        """The scalar loss; runs inside a StatelessScope that collects losses."""
        model = self.model
        y_pred = model(x, training=self.training)
        if self._loss_fn is None:
            kwargs = {"x": x, "y": y, "y_pred": y_pred, "sample_weight": None}
            if "training" in inspect.signature(model.compute_loss).parameters:
                kwargs["training"] = self.training
            value = model.compute_loss(**kwargs)
        else:
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
        return keras.ops.cast(value, "float32")

    @contextlib.contextmanager
    def _model_compile_loss_kept(self):
        """Compute with a copy of the model's compiled loss while that is unbuilt.

        Keras builds a compiled loss on its first call. A model whose compiled loss is
        already built when `fit` starts skips fit's symbolic build, which consumes
        random state (on JAX a shuffle from NumPy's global RNG): the fit's random draws
        (on JAX every epoch's batch order), and so its weights, would change. A private
        copy, built instead, leaves the model's unbuilt.
        """
        model = self.model
        compiled = getattr(model, "_compile_loss", None)
        if (
            self._loss_fn is not None
            or compiled is None
            or getattr(compiled, "built", True)
            or not hasattr(compiled, "_user_loss")
        ):
            yield
            return
        if self._loss_copy is None or self._loss_copy[0] is not compiled:
            copy = type(compiled)(
                compiled._user_loss,
                compiled._user_loss_weights,
                reduction=compiled.reduction,
                output_names=compiled.output_names,
            )
            self._loss_copy = (compiled, copy)
        model._compile_loss = self._loss_copy[1]
        try:
            yield
        finally:
            model._compile_loss = compiled

    def _build_step(self):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # the TensorFlow path differentiates with a tape

            def step(x, y):
                with tf.GradientTape() as tape:
                    # Map each trainable variable to its own value (read under the
                    # tape): regularizers read mapped values inside a StatelessScope.
                    mapping = [(v, v.value) for v in self._variables]
                    with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                        loss = self._loss_value(x, y)
                grads = tape.gradient(
                    loss, self._variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )
                return loss, grads

            self._step = tf.function(step, reduce_retracing=True)
            self._norms = tf.function(self._norm_vector, reduce_retracing=True)
        elif keras.backend.backend() == "torch":
            import torch  # eager autograd; torch.autograd.grad leaves every `.grad` alone

            def step(x, y):
                with torch.enable_grad():
                    values = [v.value for v in self._variables]
                    mapping = list(zip(self._variables, values))
                    with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                        loss = self._loss_value(x, y)
                    grads = torch.autograd.grad(loss, values, allow_unused=True) if values else []
                zero = torch.zeros_like
                return loss.detach(), [zero(v) if g is None else g for g, v in zip(grads, values)]

            self._step = step
            self._norms = lambda grads, weights, extra: self._norm_vector(
                grads,
                [w.detach() for w in weights],
                [keras.ops.convert_to_tensor(e).detach() for e in extra],
            )
        else:
            import jax  # the JAX path differentiates a stateless forward pass

            model = self.model
            others = list(model.non_trainable_variables)

            def loss_of(trainable, non_trainable, x, y):
                mapping = list(zip(self._variables, trainable)) + list(zip(others, non_trainable))
                with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                    return self._loss_value(x, y)

            grad_fn = jax.jit(jax.value_and_grad(loss_of))

            def step(x, y):
                return grad_fn([v.value for v in self._variables], [v.value for v in others], x, y)

            self._step = step
            self._norms = self._norm_vector

    def _norm_vector(self, grads, weights, extra):
        """[‖g‖, ‖w‖ per group..., *extra] as one float32 vector, on device."""
        out = []
        for _, idx in self._groups:
            g2 = [keras.ops.sum(keras.ops.square(keras.ops.cast(grads[i], "float32"))) for i in idx]
            w2 = [
                keras.ops.sum(keras.ops.square(keras.ops.cast(weights[i], "float32"))) for i in idx
            ]
            out.append(keras.ops.sqrt(keras.ops.sum(keras.ops.stack(g2))))
            out.append(keras.ops.sqrt(keras.ops.sum(keras.ops.stack(w2))))
        tail = keras.ops.cast(keras.ops.stack(extra), "float32")
        return keras.ops.concatenate([keras.ops.stack(out), tail]) if out else tail

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "learning_rate"):
            return None
        return optimizer.learning_rate

    # -- running --------------------------------------------------------------------

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

    def run_batches(self, batches, source="", *, argument="data"):
        """Measure gradients on already validated `(x, y)` host batches."""
        check_inputs(self.model, batches, argument)
        for i, (_, y) in enumerate(batches):
            if y is None:
                raise ValueError(
                    f"Gradients need targets: `{argument}` must give `(x, y)` pairs. "
                    f"Received: no targets in batch {i}"
                )
        if self._step is None:
            self._build_step()
        acc, total, loss_sum = None, 0.0, 0.0
        for x, y in batches:
            n = float(keras.tree.flatten(x)[0].shape[0])
            with self._model_compile_loss_kept():
                loss, grads = self._step(x, y)
            scaled = [keras.ops.multiply(g, n) for g in grads]
            acc = scaled if acc is None else [a + s for a, s in zip(acc, scaled)]
            loss_sum = loss * n if total == 0 else loss_sum + loss * n
            total += n
        mean_grads = [a / total for a in acc]
        lr = self._learning_rate()
        extra = [loss_sum / total] + ([] if lr is None else [keras.ops.cast(lr, "float32")])
        weights = [v.value for v in self._variables]
        # The one host transfer of this run.
        host = keras.ops.convert_to_numpy(self._norms(mean_grads, weights, extra))
        host = host.astype(np.float64)
        metrics = {}
        for k, (site, _) in enumerate(self._groups):
            g, w = float(host[2 * k]), float(host[2 * k + 1])
            values = {"gradient_norm": g, "weight_norm": w}
            if lr is not None and w > 0:
                values["update_ratio"] = float(host[-1]) * g / w
            metrics[site.name] = values
        tail = 2 * len(self._groups)
        return GradientResult(
            sites=list(self.sites),
            metrics=metrics,
            source=source,
            loss=float(host[tail]),
            learning_rate=None if lr is None else float(host[tail + 1]),
        )


def layer_gradients(
    model, data, *, loss=None, layers=None, batch_size=None, max_batches=None, training=False
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
        training: forward pass in training mode, state updates discarded. Defaults to
            `False`.

    ```python
    result = keras_initkit.probe.gradients.layer_gradients(model, (x, y))
    norms = result.metric("gradient_norm")
    ```
    """
    probe = GradientProbe(model, loss=loss, layers=layers, batch_size=batch_size, training=training)
    return probe.run(data, max_batches=max_batches)


__all__ = [
    "GradientProbe",
    "GradientResult",
    "check_inputs",
    "layer_gradients",
    "own_trainable_weights",
]
