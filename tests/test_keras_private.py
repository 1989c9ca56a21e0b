"""Every private Keras attribute keras_initkit relies on (`keras_initkit._keras_private`).

Each test names the attribute it needs: a Keras release that renames or drops one fails
here, by name, instead of somewhere inside a feature.
"""

import keras
import numpy as np
import pytest

from keras_initkit import _keras_private

pytestmark = pytest.mark.backend_agnostic


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(3, name="inner")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        return self.norm(self.inner(x))


def _model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(Block(name="block")(inputs)))


def test_layer_flatten_layers_walks_custom_blocks():
    assert hasattr(keras.layers.Layer, "_flatten_layers"), "Layer._flatten_layers is gone"
    model = _model()
    names = [layer.name for layer in _keras_private.sublayers(model)]
    assert {"block", "inner", "norm", "head"} <= set(names)
    top = [layer.name for layer in _keras_private.sublayers(model, recursive=False)]
    assert "inner" not in top and "block" in top


def test_model_compile_loss_and_its_constructor_arguments():
    model = _model()
    assert _keras_private.compiled_loss(model) is None
    assert not _keras_private.has_loss(model)
    model.compile(optimizer="sgd", loss="mse")
    compiled = _keras_private.compiled_loss(model)
    assert compiled is not None, "Model._compile_loss is gone"
    for name in ("_user_loss", "_user_loss_weights", "reduction", "output_names", "built"):
        assert hasattr(compiled, name), f"CompileLoss.{name} is gone"
    assert not compiled.built
    copy = _keras_private.unbuilt_loss_copy(model)
    assert type(copy) is type(compiled) and copy is not compiled
    x, y = np.ones((2, 4), "float32"), np.zeros((2, 2), "float32")
    previous = _keras_private.swap_compiled_loss(model, copy)
    try:
        value = model.compute_loss(x=x, y=y, y_pred=model(x))
    finally:
        _keras_private.swap_compiled_loss(model, previous)
    assert np.isfinite(float(keras.ops.convert_to_numpy(value)))
    assert copy.built and not compiled.built, "the model's own compiled loss was built"
    assert _keras_private.unbuilt_loss_copy(model) is not None


def test_custom_compute_loss_counts_as_a_loss():
    class Custom(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
            return keras.ops.mean(y_pred)

    inputs = keras.Input((4,))
    model = Custom(inputs, keras.layers.Dense(1)(inputs))
    assert _keras_private.has_custom_compute_loss(model) and _keras_private.has_loss(model)


def test_sync_jax_state_is_a_no_op_outside_a_jax_fit():
    model = _model()
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    _keras_private.sync_jax_state(model)
    for old, v in zip(before, model.variables):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(v))
    if keras.backend.backend() == "jax":
        assert callable(getattr(keras.Model, "jax_state_sync", None)), "jax_state_sync is gone"


def test_keras_mask_of_a_masked_tensor():
    embed = keras.layers.Embedding(5, 2, mask_zero=True)
    out = embed(np.array([[1, 0]]))
    mask = _keras_private.keras_mask(out)
    assert mask is not None, "keras.src.backend.common.masking.get_keras_mask changed"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), [[True, False]])


def test_batch_moments_are_those_batch_normalization_normalizes_with():
    layer = keras.layers.BatchNormalization()
    x = np.random.default_rng(0).normal(2.0, 3.0, (16, 4)).astype("float32")
    layer(x)  # built
    layer.moving_mean.assign([1.0, 2.0, 3.0, 4.0])
    with _keras_private.batch_moments(layer) as captured:
        layer(x, training=True)
    assert len(captured) == 1, "BatchNormalization._moments changed"
    mean, variance, moving_mean, moving_variance = (
        keras.ops.convert_to_numpy(t) for t in captured[0]
    )
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance, x.var(axis=0), rtol=1e-4)
    # The moving statistics as they were before this call updated them.
    np.testing.assert_array_equal(moving_mean, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(moving_variance, np.ones(4))
    assert not np.allclose(keras.ops.convert_to_numpy(layer.moving_mean), moving_mean)
    assert "_moments" not in vars(layer)  # the method is the class's again
    with _keras_private.batch_moments(layer) as captured:
        layer(x, training=False)  # inference: the moving statistics, nothing computed
    assert captured == []


class OwnCall(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=training, mask=mask) + 1.0


# 2: the last axis said as a positive index (keras.applications' ResNet50 says 3), which
# the probe passes on as -1 (no reshapes); Keras' own call reshapes.
@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_batch_norm_without_update_normalizes_as_keras_and_records_no_update(axis):
    layer = keras.layers.BatchNormalization(axis=axis, epsilon=0.01)
    x = np.random.default_rng(0).normal(2.0, 3.0, (16, 4, 3)).astype("float32")
    layer(x)  # built
    layer.gamma.assign(np.linspace(0.5, 2.0, layer.gamma.shape[0]))
    layer.beta.assign(np.linspace(-1.0, 1.0, layer.beta.shape[0]))
    normalize = _keras_private.batch_norm_without_update(layer, layer.call)
    with keras.StatelessScope() as keras_scope:
        expected = keras.ops.convert_to_numpy(layer.call(x, training=True))
    assert keras_scope.get_current_value(layer.moving_mean) is not None  # Keras updates
    with keras.StatelessScope() as scope:
        with _keras_private.batch_moments(layer) as captured:
            got = keras.ops.convert_to_numpy(normalize(x, training=True))
    np.testing.assert_array_equal(got, expected)  # the same ops on the same moments
    assert len(captured) == 1  # `_moments` is still the one normalized with
    assert scope.get_current_value(layer.moving_mean) is None, "no update was built"
    assert scope.get_current_value(layer.moving_variance) is None


def test_batch_norm_without_update_leaves_every_other_case_to_keras():
    x = np.random.default_rng(1).normal(1.0, 2.0, (8, 3)).astype("float32")
    plain, renorm, own = (
        keras.layers.BatchNormalization(),
        keras.layers.BatchNormalization(renorm=True),
        OwnCall(),
    )
    for layer in (plain, renorm, own):
        layer(x)
        layer.moving_mean.assign([5.0, -5.0, 1.0])  # inference differs from a training batch

    def run(layer, call, **kwargs):
        """`(whether Keras' own call ran: it records the moving-mean update, output)`
        inside a stateless scope."""
        with keras.StatelessScope() as scope:
            out = _keras_private.batch_norm_without_update(layer, call)(x, **kwargs)
        ran = scope.get_current_value(layer.moving_mean) is not None
        return ran, keras.ops.convert_to_numpy(out)

    def keras_output(layer, **kwargs):
        with keras.StatelessScope():
            return keras.ops.convert_to_numpy(layer.call(x, **kwargs))

    ran, out = run(plain, plain.call, training=True)  # the case it serves: no update built
    assert not ran
    np.testing.assert_array_equal(out, keras_output(plain, training=True))
    assert run(plain, plain.call, training=True, mask=np.ones(8, bool))[0]  # Keras checks a mask
    assert run(renorm, renorm.call, training=True)[0]
    wrapper = lambda *args, **kwargs: plain.call(*args, **kwargs)  # noqa: E731
    assert run(plain, wrapper, training=True)[0]  # an outer interception's call runs
    ran, out = run(own, own.call, training=True)  # a subclass's own call runs
    assert ran
    np.testing.assert_allclose(out, keras_output(own, training=True), rtol=1e-6)
    inference = keras_output(plain, training=False)  # the moving statistics
    np.testing.assert_array_equal(run(plain, plain.call, training=False)[1], inference)
    plain.trainable = False  # frozen: Keras normalizes with the moving statistics
    np.testing.assert_array_equal(run(plain, plain.call, training=True)[1], inference)
    plain.trainable = True
    before = keras.ops.convert_to_numpy(plain.moving_mean)
    _keras_private.batch_norm_without_update(plain, plain.call)(x, training=True)  # no scope
    assert not np.allclose(keras.ops.convert_to_numpy(plain.moving_mean), before)  # updated


def test_shadowing_restores_the_instance_attribute_or_its_absence_and_nests():
    layer = keras.layers.Dense(2, activation="relu")
    relu = layer.activation
    assert "_moments" not in vars(layer) and "activation" in vars(layer)
    with _keras_private.shadowing(layer, activation=None, _moments=len):
        assert layer.activation is None and layer._moments is len
        with _keras_private.shadowing(layer, _moments=abs):
            assert layer._moments is abs
        assert layer._moments is len  # the outer shadowing again
    assert layer.activation is relu and "_moments" not in vars(layer)
    with pytest.raises(RuntimeError):
        with _keras_private.shadowing(layer, activation=None):
            raise RuntimeError("restored also when the block raises")
    assert layer.activation is relu


def test_overriding_maps_one_variable_and_keeps_the_enclosing_mapping():
    v = keras.Variable(np.ones(3, "float32"))
    w = keras.Variable(np.ones(2, "float32"))
    with keras.StatelessScope(state_mapping=[(w, np.full(2, 5.0, "float32"))]):
        with _keras_private.overriding(v, keras.ops.full((3,), 3.0)):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), [3.0] * 3)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(w.value), [5.0] * 2)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), [1.0] * 3)
    with _keras_private.overriding(w, keras.ops.zeros((2,))):  # no enclosing scope
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w.value), [0.0] * 2)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), [1.0] * 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(w.value), [1.0] * 2)


@pytest.mark.parametrize("rnn", [keras.layers.LSTM, keras.layers.GRU])
def test_unfused_turns_off_bidirectionals_fused_cudnn_path(rnn):
    """`Bidirectional._can_attempt_fused_lstm` / `_gru` (the fused cuDNN pair on a GPU)."""
    layer = keras.layers.Bidirectional(rnn(4))
    layer.build((2, 5, 3))
    checks = ("_can_attempt_fused_lstm", "_can_attempt_fused_gru")
    own = checks[0] if rnn is keras.layers.LSTM else checks[1]
    assert getattr(layer, own)(None, None) is True  # Keras would try the fused call
    dense = keras.layers.Dense(2)
    with _keras_private.unfused([layer, dense]):
        assert [getattr(layer, check)(None, None) for check in checks] == [False, False]
    assert getattr(layer, own)(None, None) is True
    assert not set(checks) & (set(vars(layer)) | set(vars(dense)))
