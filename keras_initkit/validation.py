"""Argument validation, written once for every public function and class.

Each helper returns the normalized value or raises `ValueError` in the Keras style:
what the argument must be, then ``Received: name=value``. Initializers keep their own
`initializers/_utils.py` (they import nothing else of ours, see DESIGN.md).
"""

import math
import os

import numpy as np

VERBOSE_VALUES = (0, 1, "auto")


def _is_number(value):
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.number))


def _is_integer(value):
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _fail(name, expected, value):
    raise ValueError(f"Argument `{name}` must be {expected}. Received: {name}={value!r}")


def model(value, name="model"):
    """`value` if it is a `keras.Model` (a string or None raised AttributeErrors deep
    inside)."""
    import keras  # lazily: the CLI reads logs without importing Keras

    if not isinstance(value, keras.Model):
        raise ValueError(
            f"Argument `{name}` must be a `keras.Model`. Received: {name} of type "
            f"{type(value).__name__}"
        )
    return value


def positive_int(value, name, *, allow_none=True):
    """`value` if it is a positive int (or None where allowed)."""
    if value is None and allow_none:
        return None
    if not _is_integer(value) or value < 1:
        _fail(name, "a positive int" + (" or None" if allow_none else ""), value)
    return int(value)


def positive(value, name, *, above=0.0):
    """`value` as a float if it is a finite number greater than `above`."""
    if not _is_number(value) or not math.isfinite(value) or not value > above:
        _fail(name, f"a finite number greater than {above:g}", value)
    return float(value)


def metric_thresholds(value, name):
    """`{metric: float}` from a `{str: finite number}` dict; `{}` for None."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _is_number(v) and math.isfinite(v) for k, v in value.items()
    ):
        _fail(name, "a dict `{metric name: finite number}` or None", value)
    return {k: float(v) for k, v in value.items()}


def exempt_layers(value, name):
    """`{"above"|"below": {metric: [layer names]}}` from such a dict; `{}` for None."""
    if value is None:
        return {}

    def layer_lists(metrics):
        return isinstance(metrics, dict) and all(
            isinstance(metric, str)
            and isinstance(names, (list, tuple))
            and all(isinstance(n, str) for n in names)
            for metric, names in metrics.items()
        )

    if not isinstance(value, dict) or not all(
        side in ("above", "below") and layer_lists(metrics) for side, metrics in value.items()
    ):
        _fail(name, '`{"above" or "below": {metric name: [layer names]}}` or None', value)
    return {side: {m: list(n) for m, n in metrics.items()} for side, metrics in value.items()}


def _steps_per_layer(value):
    """Whether `value` is `{metric: {layer name: step (int >= 0)}}`."""
    return isinstance(value, dict) and all(
        isinstance(metric, str)
        and isinstance(layers, dict)
        and all(
            isinstance(n, str) and _is_integer(step) and step >= 0 for n, step in layers.items()
        )
        for metric, layers in value.items()
    )


def _int_steps(value):
    return {
        m: {n: int(step) for n, step in layers.items()} for m, layers in value.items() if layers
    }


def judged_from(value, name):
    """`{metric: {layer name: step}}` (steps: integers >= 0) from such a dict; `{}` for None."""
    if value is None:
        return {}
    if not _steps_per_layer(value):
        _fail(name, "a dict `{metric name: {layer name: step (int >= 0)}}` or None", value)
    return _int_steps(value)


def exempt_until(value, name):
    """`{"above"|"below": {metric: {layer name: step}}}` (steps: integers >= 0) from
    such a dict; `{}` for None."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        side in ("above", "below") and _steps_per_layer(metrics) for side, metrics in value.items()
    ):
        _fail(
            name,
            '`{"above" or "below": {metric name: {layer name: step (int >= 0)}}}` or None',
            value,
        )
    sides = {side: _int_steps(metrics) for side, metrics in value.items()}
    return {side: metrics for side, metrics in sides.items() if metrics}


def epoch_ends(value, name):
    """`{"metrics": [str], "steps": [int >= 0]}` from such a dict; `{}` for None."""
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or set(value) != {"metrics", "steps"}
        or not isinstance(value["metrics"], (list, tuple))
        or not all(isinstance(m, str) for m in value["metrics"])
        or not isinstance(value["steps"], (list, tuple))
        or not all(_is_integer(s) and s >= 0 for s in value["steps"])
    ):
        _fail(name, '`{"metrics": [metric names], "steps": [steps (int >= 0)]}` or None', value)
    if not value["metrics"]:
        return {}
    return {"metrics": list(value["metrics"]), "steps": [int(s) for s in value["steps"]]}


def fraction(value, name):
    """`value` as a float if it is a number in [0, 1]."""
    if not _is_number(value) or not 0 <= value <= 1:
        _fail(name, "a number in [0, 1]", value)
    return float(value)


def boolean(value, name):
    """`value` if it is a bool."""
    if not isinstance(value, (bool, np.bool_)):
        _fail(name, "a bool", value)
    return bool(value)


def boolean_or_auto(value, name):
    """`value` if it is a bool or `"auto"`."""
    if isinstance(value, str) and value == "auto":
        return value
    if not isinstance(value, (bool, np.bool_)):
        _fail(name, 'True, False or "auto"', value)
    return bool(value)


def one_of(value, name, choices):
    """`value` if it is one of `choices`."""
    if isinstance(value, (bool, np.bool_)) or value not in choices:
        _fail(name, f"one of {tuple(choices)}", value)
    return value


def verbose(value, name="verbose"):
    """Keras' `verbose` policy: `0` (silent), `1` (progress and messages) or `"auto"`.

    Returned unchanged; `resolve_verbose` turns `"auto"` into 0 or 1 where it is used.
    """
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, str) and value == "auto":
        return value
    if not isinstance(value, (int, np.integer)) or value not in (0, 1):
        _fail(name, '0, 1 or "auto"', value)
    return int(value)


def resolve_verbose(value, auto):
    """`0` or `1` from a validated `verbose`: `"auto"` becomes `int(auto)`."""
    return int(bool(auto)) if value == "auto" else int(value)


def path_or_none(value, name):
    """`os.fspath(value)` if it is a str or path-like object, or None."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(
            f"Argument `{name}` must be a path (str or os.PathLike) or None. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return os.fspath(value)


def layers(layers):
    """`layers` as a list, validated before any model is known (None stays None)."""
    import keras  # here: this module is imported where Keras is not (the CLI)

    if layers is None:
        return None
    items = [layers] if isinstance(layers, (str, keras.layers.Layer)) else layers
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(
            "Argument `layers` must be None, a layer name or layer, or a non-empty list "
            f"of them. Received: layers={layers!r}"
        )
    for item in items:
        if not isinstance(item, (str, keras.layers.Layer)):
            raise ValueError(
                "Argument `layers` must contain layer names or layer objects. "
                f"Received: {item!r} of type {type(item).__name__}"
            )
    return list(items)
