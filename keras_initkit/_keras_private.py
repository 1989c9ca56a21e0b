"""Every use of a private Keras attribute, in one place, each with why no public path exists.

`tests/test_keras_private.py` checks each of them against the installed Keras, so a
Keras release that renames or drops one fails that test by name instead of breaking a
feature somewhere else.
"""

import contextlib

import keras


def sublayers(layer, *, recursive=True):
    """Every layer tracked inside `layer` (not `layer` itself), in tracking order.

    `Layer._flatten_layers`: `model.layers` lists only a model's top level, and no
    public API walks the sublayers of subclassed models and custom layers (a
    Transformer block's attention and dense layers, a nested model's layers).
    """
    return list(layer._flatten_layers(include_self=False, recursive=recursive))


def optimizer_steps(model):
    """How many steps the model's optimizer has taken (`optimizer.iterations`, public
    API); 0 without an optimizer."""
    from keras_initkit.probe.backend import to_numpy  # the probe package imports this one

    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    return 0 if iterations is None else int(to_numpy(iterations))


def compiled_loss(model):
    """The model's `CompileLoss` (what `compile(loss=...)` set up), or None.

    `Model._compile_loss`: Keras exposes the user's `loss` argument nowhere else.
    """
    return getattr(model, "_compile_loss", None)


def has_custom_compute_loss(model):
    """True when the model overrides `compute_loss` (public API, listed for symmetry)."""
    return type(model).compute_loss is not keras.Model.compute_loss


def has_loss(model, loss=None):
    """True when a training loss is known: `loss`, a compiled one or `compute_loss`."""
    return loss is not None or compiled_loss(model) is not None or has_custom_compute_loss(model)


def unbuilt_loss_copy(model):
    """A fresh, unbuilt copy of the model's compiled loss while that one is unbuilt; else None.

    Keras builds a `CompileLoss` on its first call, and a model whose compiled loss is
    already built when `fit` starts skips fit's symbolic build, which consumes random
    state (on JAX a shuffle from NumPy's global RNG): computing a loss before `fit`
    would change the fit. A copy, built instead, leaves the model's unbuilt. The
    constructor arguments are private attributes (`_user_loss`,
    `_user_loss_weights`): `CompileLoss` has no `get_config`.
    """
    compiled = compiled_loss(model)
    if compiled is None or getattr(compiled, "built", True) or not hasattr(compiled, "_user_loss"):
        return None
    return type(compiled)(
        compiled._user_loss,
        compiled._user_loss_weights,
        reduction=compiled.reduction,
        output_names=compiled.output_names,
    )


def swap_compiled_loss(model, replacement):
    """Install `replacement` as the model's compiled loss; return the previous one."""
    previous = model._compile_loss
    model._compile_loss = replacement
    return previous


def sync_jax_state(model):
    """Write a JAX fit's live weights back into the variables (no-op elsewhere).

    Inside a JAX `fit` the weights live outside the variables between epochs;
    `Model.jax_state_sync` (undocumented, used by Keras' own callbacks) puts them back.
    """
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def keras_mask(tensor):
    """The Keras mask attached to `tensor` (`mask_zero`, `Masking`), or None.

    `keras.src.backend.common.masking.get_keras_mask`: Keras has no public accessor,
    and `MultiHeadAttention` clears its inputs' masks when called, so a probe that
    needs the query mask must read it first.
    """
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


_MISSING = object()


def _never(*args, **kwargs):
    return False


@contextlib.contextmanager
def unfused(layers):
    """Each `Bidirectional` of `layers` runs its two directions as two layer calls.

    `Bidirectional._can_attempt_fused_lstm` and `_can_attempt_fused_gru`: on a GPU,
    Keras runs an LSTM or GRU pair as one fused cuDNN call that never calls
    `forward_layer` or `backward_layer`, so an interception of them sees no call (an
    H200 showed `diagnose` silently without both directions, on JAX and on torch).
    Each direction still takes its own cuDNN kernel. No public switch exists
    (`use_cudnn=False` would also slow each direction). A Keras without the fused path
    has no such methods: shadowing them changes nothing.
    """
    with contextlib.ExitStack() as stack:
        for layer in layers:
            if isinstance(layer, keras.layers.Bidirectional):
                stack.enter_context(
                    shadowing(layer, _can_attempt_fused_lstm=_never, _can_attempt_fused_gru=_never)
                )
        yield


@contextlib.contextmanager
def shadowing(layer, **values):
    """Each `name=value` as an instance attribute of `layer` while the block runs;
    afterwards the instance's own attribute again, or none where it had none.

    `object.__setattr__`: `Layer.__setattr__` tracks what is assigned to a layer
    (sublayers, variables, its call signature); a function or flag set for the
    duration of one call is no state for it. An instance attribute shadows the class's
    for this layer only, and shadowings nest.
    """
    saved = {name: layer.__dict__.get(name, _MISSING) for name in values}
    try:
        for name, value in values.items():
            object.__setattr__(layer, name, value)
        yield
    finally:
        for name, previous in saved.items():
            if previous is _MISSING:
                layer.__dict__.pop(name, None)
            else:
                object.__setattr__(layer, name, previous)


@contextlib.contextmanager
def batch_moments(layer):
    """Yield a list that receives `(mean, variance, moving_mean, moving_variance)` each
    time a `BatchNormalization` layer computes the moments of a training batch while the
    block runs; it stays empty when the layer computes none (inference mode).

    `BatchNormalization._moments(inputs, mask)`: the layer normalizes a training batch
    with these moments and exposes them nowhere, so a probe that needs the batch's
    per-channel statistics would compute them a second time. The moving statistics
    are read when `_moments` is called: before the layer updates them. The method is
    shadowed for this layer only (`shadowing`).
    """
    captured = []
    method = getattr(layer, "_moments", None)
    if not callable(method):
        yield captured
        return

    def read(variable):
        """The value now, not a view the update will change: TensorFlow's conversion
        of a variable is lazy, and torch assigns in place."""
        if keras.backend.backend() == "torch":
            return keras.ops.copy(variable)
        return keras.ops.cast(variable, variable.dtype)

    def capture(*args, **kwargs):
        moving = (read(layer.moving_mean), read(layer.moving_variance))
        moments = method(*args, **kwargs)
        captured.append((*moments, *moving))
        return moments

    with shadowing(layer, _moments=capture):
        yield captured


def batch_norm_without_update(layer, call):
    """`call` (a `BatchNormalization`'s) that skips the moving-statistics update on a
    training batch inside a `keras.StatelessScope`, where the update is dropped anyway.

    `BatchNormalization.call` computes `moving * momentum + batch * (1 - momentum)` for
    both moving statistics and assigns them; a stateless scope records the assignment
    and drops it (as every probe pass does), yet the update's ops are still built:
    about half of a batch-norm layer's traced ops (ResNet50's probe: ~0.3 s of its
    ~1 s trace). This runs the rest of Keras' training branch as Keras writes it (the
    layer's `_moments`, so `batch_moments` still captures them, `gamma`, `beta`,
    `axis`, `epsilon` and its dtype casts); the output is the same tensor. Keras has no
    public switch for "normalize with the batch's moments, update nothing". Anything
    else runs `call`: inference, a frozen layer, a mask, renorm, no stateless scope,
    and a `call` other than Keras' own (a subclass's, or an outer interception's).
    """
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    standard = getattr(call, "__func__", None) is keras.layers.BatchNormalization.call
    standard = standard and not getattr(layer, "renorm", False)

    def normalize(inputs, training=None, mask=None):
        skip = standard and training and layer.trainable and mask is None
        if not (skip and in_stateless_scope()):
            return call(inputs, training=training, mask=mask)
        ops = keras.ops
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        gamma = ops.cast(layer.gamma, inputs.dtype) if layer.scale else None
        beta = ops.cast(layer.beta, inputs.dtype) if layer.center else None
        mean, variance = layer._moments(inputs, mask)
        # The channel axis last, said as -1: the (channels,) statistics then broadcast
        # as they are (the same values), where Keras' TensorFlow backend reshapes all
        # four for any other axis: 8 of a layer's ~25 traced ops (ResNet50 passes 3).
        ndim = len(inputs.shape)
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=-1 if layer.axis % ndim == ndim - 1 else layer.axis,
            offset=beta,
            scale=gamma,
            epsilon=layer.epsilon,
        )
        return ops.cast(outputs, layer.compute_dtype)

    return normalize


def overriding(variable, value):
    """A `keras.StatelessScope` in which `variable` reads `value` and every other
    variable reads what it reads now.

    `stateless_scope.get_stateless_scope` and a scope's `state_mapping`: a new scope
    does not fall back to the one it is nested in (a variable it does not map reads its
    own value), and Keras has no public way to read the enclosing scope's mapping. A
    pure "this layer with its kernel scaled" for `keras.ops.while_loop` needs it: inside
    a traced pass the enclosing scope maps every variable to a traced value.
    """
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    outer = get_stateless_scope()
    scope = keras.StatelessScope(initialize_variables=False)
    scope.state_mapping = {**(outer.state_mapping if outer is not None else {})}
    scope.state_mapping[id(variable)] = value
    return scope
