"""recalibrate_batchnorm: exact population statistics, in forward order, nothing else changed."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_initkit.batchnorm as batchnorm
from keras_initkit import RecalibrationReport, recalibrate_batchnorm


def _numpy(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


def _x(n=150, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * 3.0 + 1.5).astype("float32")


def _chain(depth=3, dropout=0.0):
    inputs = keras.Input((6,))
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(8, name=f"dense_{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn_{i}")(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.Dropout(dropout, seed=1)(h)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(h))


def _stale_chain():
    """A chain whose moving statistics are off, with built optimizer and seed state."""
    keras.utils.set_random_seed(0)
    model = _chain(dropout=0.3)
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=8).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, size=8).astype("float32"))
    return model, _x()


def _input_moments(model, layer_name, x):
    """Population mean and biased variance of a BN layer's input, at inference."""
    features = keras.Model(model.inputs[0], model.get_layer(layer_name).input)
    a = _numpy(features(x, training=False)).astype(np.float64)
    return a.mean(axis=0), a.var(axis=0)


@pytest.mark.backend_agnostic
def test_moving_statistics_become_population_statistics_of_concatenated_data():
    model, x = _stale_chain()
    report = recalibrate_batchnorm(
        model, x, batch_size=64, method="chain", variance="population", verbose=0
    )  # 3 uneven batches

    assert report.source == "150 samples in 3 batch(es)"
    for name in ("bn_0", "bn_1", "bn_2"):
        # Measured with the upstream layers as recalibrated: the inference fixpoint.
        mean, var = _input_moments(model, name, x)
        layer = model.get_layer(name)
        np.testing.assert_allclose(_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_numpy(layer.moving_variance), var, rtol=1e-4, atol=1e-5)
        assert report.before[name]["bn_mean_shift"] > 0.05
        assert report.after[name]["bn_mean_shift"] < 1e-3
        assert abs(report.after[name]["bn_std_ratio"] - 1.0) < 1e-3
    assert report.layers == ["bn_0", "bn_1", "bn_2"]
    assert 2 <= report.passes <= 4  # a chain of 3: at most depth + 1 passes


@pytest.mark.backend_agnostic
def test_nothing_but_moving_statistics_changes():
    model, x = _stale_chain()
    moving = {
        id(v)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    }
    others = [v for v in model.variables + model.optimizer.variables if id(v) not in moving]
    seeds = [model.layers[-2].seed_generator.state]
    before = [_numpy(v).copy() for v in others + seeds]

    recalibrate_batchnorm(model, x, verbose=0)

    for old, v in zip(before, others + seeds):
        np.testing.assert_array_equal(_numpy(v), old)


@pytest.mark.parametrize("method", ["one_pass", "chain"])
def test_recalibrated_model_is_a_fixpoint(method):
    model, x = _stale_chain()
    recalibrate_batchnorm(model, x, method=method, verbose=0)
    stats = [_numpy(v).copy() for v in model.non_trainable_variables]
    again = recalibrate_batchnorm(model, x, method=method, verbose=0)
    assert again.passes == 1
    for old, v in zip(stats, model.non_trainable_variables):
        np.testing.assert_array_equal(_numpy(v), old)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(5)
        self.norm = keras.layers.BatchNormalization()
        self.out = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.out(keras.ops.tanh(self.norm(self.dense(x), training=training)))


def _sequential():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5), keras.layers.BatchNormalization()]
    )


def _nested():
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5), keras.layers.BatchNormalization()],
        name="inner",
    )
    inputs = keras.Input((6,))
    h = keras.layers.BatchNormalization(name="outer_bn")(keras.layers.ReLU()(inner(inputs)))
    return keras.Model(inputs, h)


def _conv():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(3, 3),
            keras.layers.BatchNormalization(),
        ]
    )


def _subclassed():
    model = SubclassedNet()
    model(_x(2))
    return model


@pytest.mark.parametrize("build", [_sequential, _nested, _subclassed, _conv])
def test_model_kinds(build):
    model = build()
    x = _x(40) if build is not _conv else _x(40 * 12).reshape(40, 6, 6, 2)
    report = recalibrate_batchnorm(model, x, batch_size=16, verbose=0)
    assert report.layers
    for name in report.layers:
        assert report.before[name]["bn_mean_shift"] > 0.05
        assert report.after[name]["bn_mean_shift"] < 1e-3
        assert abs(report.after[name]["bn_std_ratio"] - 1.0) < 1e-3


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, size):
        super().__init__()
        self.x, self.size = x, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        chunk = self.x[i * self.size : (i + 1) * self.size]
        return chunk, chunk[:, :1]


def _tf_dataset(x):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(32)


@pytest.mark.parametrize("kind", ["array", "tuple", "tf.data", "PyDataset"])
def test_data_sources_give_the_same_statistics(kind):
    if kind == "tf.data" and keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data needs TensorFlow")
    x = _x(100)
    data = {
        "array": lambda: x,
        "tuple": lambda: (x, x[:, :1]),
        "tf.data": lambda: _tf_dataset(x),
        "PyDataset": lambda: _Batches(x, 32),
    }[kind]()
    model = _sequential()
    recalibrate_batchnorm(model, data, variance="population", verbose=0)
    mean, var = _input_moments(model, model.layers[1].name, x)
    np.testing.assert_allclose(_numpy(model.layers[1].moving_mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_numpy(model.layers[1].moving_variance), var, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["array", "PyDataset"])
def test_num_samples_uses_only_the_first_samples(kind):
    x = _x(100)
    model = _sequential()
    data = x if kind == "array" else _Batches(x, 32)
    report = recalibrate_batchnorm(model, data, num_samples=40, variance="population", verbose=0)
    assert report.source.startswith("40 samples")
    mean, var = _input_moments(model, model.layers[1].name, x[:40])
    np.testing.assert_allclose(_numpy(model.layers[1].moving_mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_numpy(model.layers[1].moving_variance), var, rtol=1e-4, atol=1e-5)


def test_model_without_batchnorm_warns_and_changes_nothing():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    before = [_numpy(v).copy() for v in model.variables]
    with pytest.warns(UserWarning, match="no BatchNormalization"):
        report = recalibrate_batchnorm(model, _x(10), verbose=0)
    assert report.layers == [] and report.passes == 0
    assert "nothing was changed" in str(report)
    for old, v in zip(before, model.variables):
        np.testing.assert_array_equal(_numpy(v), old)


def _fine_tuned():
    """A pretrained block frozen for fine-tuning, its batch norm's statistics off the data."""
    layers = keras.layers
    inputs = keras.Input((6, 6, 3))
    norm = layers.BatchNormalization(name="frozen_bn")
    h = layers.ReLU()(norm(layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)))
    base = keras.Model(inputs, layers.GlobalAveragePooling2D()(h))
    norm.moving_mean.assign(np.full(8, 3.0, "float32"))
    norm.moving_variance.assign(np.full(8, 0.25, "float32"))
    base.trainable = False
    head = layers.BatchNormalization(name="head_bn")(base(inputs))
    return keras.Model(inputs, layers.Dense(3)(head)), norm


def test_frozen_batch_norm_is_left_as_it_is_unless_named():
    """`trainable=False` (fine-tuning): Keras normalizes with the moving statistics in
    training too. `diagnose` said "inference normalizes differently from training — run
    recalibrate_batchnorm", which then overwrote the frozen statistics (mean by 3.6)."""
    import keras_initkit

    model, norm = _fine_tuned()
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(32, 6, 6, 3)).astype("float32")
    rules = {(f.layer, f.rule) for f in keras_initkit.diagnose(model, x).findings}
    assert ("frozen_bn", "frozen") in rules
    assert not {r for layer, r in rules if layer == "frozen_bn"} - {"frozen"}
    before = _numpy(norm.moving_mean).copy()
    with pytest.warns(
        UserWarning, match=r"leaves 1 frozen batch-norm layer\(s\) as they are: 'frozen_bn'"
    ):
        report = recalibrate_batchnorm(model, x, verbose=0)
    np.testing.assert_array_equal(_numpy(norm.moving_mean), before)
    assert report.layers == ["head_bn"]
    report = recalibrate_batchnorm(model, x, layers=["frozen_bn"], verbose=0)  # AdaBN
    assert np.abs(_numpy(norm.moving_mean) - before).max() > 1.0
    # diagnose's note on untrained statistics counted frozen layers, which it then skips
    fresh = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()]
    )
    notes = keras_initkit.diagnose(fresh, _x(16, 4)).notes
    assert any("1 batch-norm layer(s) have untrained" in note for note in notes)
    fresh.layers[-1].trainable = False
    assert not any("untrained" in note for note in keras_initkit.diagnose(fresh, _x(16, 4)).notes)


def test_a_batch_norm_layer_called_twice_is_named_in_a_warning():
    """A siamese tower's batch norm, called on two inputs of different distributions,
    was recalibrated on the first call's inputs alone while the report showed a perfect
    match: the warning says so."""
    layers = keras.layers
    tower = keras.Sequential(
        [keras.Input((4,)), layers.Dense(4), layers.BatchNormalization(name="bn")]
    )
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], layers.Dense(1)(layers.Concatenate()([tower(a), tower(b)])))
    with pytest.warns(UserWarning, match=r"called more than once in the model: 'bn' \(2 calls\)"):
        recalibrate_batchnorm(model, [_x(16, 4), _x(16, 4) + 5.0], verbose=0)
    single = keras.Sequential([keras.Input((4,)), layers.Dense(4), layers.BatchNormalization()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recalibrate_batchnorm(single, _x(16, 4), verbose=0)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupt_part_way_restores_statistics(monkeypatch, error):
    model, x = _stale_chain()
    stats = [_numpy(v).copy() for v in model.non_trainable_variables]
    run_batches = batchnorm.Probe.run_batches
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # two passes have assigned statistics by now
            raise error("stop")
        return run_batches(self, *args, **kwargs)

    monkeypatch.setattr(batchnorm.Probe, "run_batches", failing)
    with pytest.raises(error):
        recalibrate_batchnorm(model, x, method="chain", verbose=0)
    for old, v in zip(stats, model.non_trainable_variables):
        np.testing.assert_array_equal(_numpy(v), old)


def test_report_is_printable_and_serializable(capsys):
    model, x = _stale_chain()
    report = recalibrate_batchnorm(model, x, verbose=1)
    printed = capsys.readouterr().out
    assert printed.count("recalibrate_batchnorm pass") == report.passes
    # In the table's units: it printed "largest mismatch 2.55" (per-channel |log r|)
    # beside a table whose largest std ratio read 10.37.
    shift = max(report.before, key=lambda n: abs(report.before[n]["bn_mean_shift"]))
    ratio = max(report.before, key=lambda n: abs(np.log(report.before[n]["bn_std_ratio"])))
    first = printed.splitlines()[0]
    assert f"bn_mean_shift {report.before[shift]['bn_mean_shift']:.3g} ({shift})" in first, first
    assert f"{report.before[ratio]['bn_std_ratio']:.3g} ({ratio})" in first, first
    assert isinstance(report, RecalibrationReport)
    text = str(report)
    assert all(name in text for name in report.layers)
    assert json.loads(json.dumps(report.to_dict()))["layers"] == report.layers


def test_bad_input_raises_value_error():
    model = _sequential()
    x = _x(10)
    bad = x.copy()
    bad[3, 1] = np.inf
    for kwargs in (
        {"data": bad},
        {"data": x[:0]},
        {"data": x, "num_samples": 0},
        {"data": x, "layers": [model.layers[0].name]},
        {"data": x, "verbose": 3},
        {"data": x, "method": "two_pass"},
        {"data": x, "variance": "unbiased"},
        {"data": _x(10, d=4)},
        {"data": x, "batch_size": 0},
        {"data": x, "batch_size": 2.5},
    ):
        with pytest.raises(ValueError, match="Received"):
            recalibrate_batchnorm(model, **kwargs)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("method", ["one_pass", "chain"])
def test_one_sample_batches_without_variance_are_refused(method):
    """A batch of one sample has no variance where batch norm reduces over the batch
    axis alone: batch_average wrote a moving variance of 0 and reported success. It
    raises, naming the way out, and changes nothing; the population variance and a
    convolution's spatial positions have variance, and go ahead."""
    model = _sequential()
    before = [_numpy(v) for v in model.non_trainable_weights]
    with pytest.raises(ValueError, match=r"batch of one sample has none.*batch_size=2 or more"):
        recalibrate_batchnorm(model, _x(10), batch_size=1, method=method, verbose=0)
    for old, new in zip(before, [_numpy(v) for v in model.non_trainable_weights]):
        np.testing.assert_array_equal(new, old)
    recalibrate_batchnorm(model, _x(10), batch_size=1, variance="population", verbose=0)
    assert all(np.all(_numpy(v) > 0) for v in model.non_trainable_weights if "variance" in v.path)
    conv = _conv()
    recalibrate_batchnorm(
        conv, _x(4 * 12).reshape(4, 6, 6, 2), batch_size=1, method=method, verbose=0
    )


def _training_input_moments(model, x, batch_size):
    """Per-batch mean and biased variance of every BN layer's input in training mode
    (a clone: its own moving statistics may change), as `(means, variances, sizes)`."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    names = [
        layer.name for layer in clone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    features = keras.Model(clone.inputs, [clone.get_layer(n).input for n in names])
    out = {n: ([], []) for n in names}
    sizes = []
    for i in range(0, len(x), batch_size):
        values = features(x[i : i + batch_size], training=True)
        sizes.append(len(x[i : i + batch_size]))
        for n, v in zip(names, values):
            v = _numpy(v).astype(np.float64)
            out[n][0].append(v.mean(axis=0))
            out[n][1].append(v.var(axis=0))
    return out, np.asarray(sizes, np.float64)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("variance", ["batch_average", "population"])
def test_one_pass_assigns_training_mode_statistics_pooled_exactly(monkeypatch, variance):
    keras.utils.set_random_seed(0)
    model = _chain(dropout=0.0)
    x = _x()
    reference, sizes = _training_input_moments(model, x, 64)
    passes = []
    run_batches = batchnorm.Probe.run_batches
    monkeypatch.setattr(
        batchnorm.Probe,
        "run_batches",
        lambda self, *a, **k: passes.append(1) or run_batches(self, *a, **k),
    )
    report = recalibrate_batchnorm(model, x, batch_size=64, variance=variance, verbose=0)
    assert len(passes) == 1 and report.passes == 1  # one pass over the data, whatever the depth
    w = sizes / sizes.sum()
    for name, (means, variances) in reference.items():
        means, variances = np.stack(means), np.stack(variances)
        mean = (w[:, None] * means).sum(axis=0)
        var = (w[:, None] * variances).sum(axis=0)
        if variance == "population":
            var = var + (w[:, None] * (means - mean) ** 2).sum(axis=0)
        layer = model.get_layer(name)
        np.testing.assert_allclose(_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_numpy(layer.moving_variance), var, rtol=1e-4, atol=1e-5)
        assert report.after[name]["bn_mean_shift"] < 1e-5


def _overflowing_chain(depth=6, stddev=1e9, scale=1.0):
    """Dense kernels of standard deviation `stddev`: in inference mode with fresh moving
    statistics the signal grows ~1e9 a layer and overflows float32 after ~4 layers;
    `scale` multiplies the last batch-norm layer's input (1e30: inf in any mode)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(
            8, kernel_initializer=keras.initializers.RandomNormal(stddev=stddev), name=f"dense_{i}"
        )(h)
        if i == depth - 1 and scale != 1.0:
            h = keras.layers.Rescaling(scale)(keras.layers.Rescaling(scale)(h))
        h = keras.layers.BatchNormalization(name=f"bn_{i}")(h)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(h))


@pytest.mark.backend_agnostic
def test_chain_waits_for_overflowing_layers_and_never_writes_nan():
    """A deep layer's inference-mode input overflows until the layers ahead are
    calibrated: it keeps its statistics meanwhile (NaN used to be written, and the
    NaN mismatch passed for converged: DenseNet121's predict was NaN)."""
    model, x = _overflowing_chain(), _x(64)
    report = recalibrate_batchnorm(model, x, method="chain", verbose=0)
    for v in model.non_trainable_variables:
        assert np.isfinite(_numpy(v)).all(), v.path
    assert np.isfinite(_numpy(model.predict(x, verbose=0))).all()
    assert 4 <= report.passes <= 7
    assert all(np.isfinite(s["bn_mean_shift"]) for s in report.after.values())


@pytest.mark.backend_agnostic
def test_chain_that_cannot_reach_finite_statistics_raises_and_changes_nothing():
    model, x = _overflowing_chain(depth=2, stddev=1.0, scale=1e30), _x(64)
    state = [_numpy(v).copy() for v in model.non_trainable_variables]
    with pytest.raises(ValueError, match=r"not finite \(bn_1\).*Received: method='chain'"):
        recalibrate_batchnorm(model, x, method="chain", verbose=0)
    for old, v in zip(state, model.non_trainable_variables):
        np.testing.assert_array_equal(_numpy(v), old)


@pytest.mark.backend_agnostic
def test_chain_repairs_nan_moving_statistics():
    """NaN moving statistics (a diverged run): a NaN mismatch must not pass for a small
    one (`max` skipped it, and the chain stopped with NaN written downstream)."""
    model, x = _chain(), _x(64)
    model.get_layer("bn_0").moving_mean.assign(np.full(8, np.nan, "float32"))
    report = recalibrate_batchnorm(model, x, method="chain", verbose=0)
    for v in model.non_trainable_variables:
        assert np.isfinite(_numpy(v)).all(), v.path
    assert np.isfinite(_numpy(model.predict(x, verbose=0))).all()
    assert report.passes >= 2
