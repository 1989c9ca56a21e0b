"""Attention layers: the attention weights of one call, without changing its output path.

`MultiHeadAttention` (and subclasses such as keras_hub's `CachedMultiHeadAttention`)
runs a fused dot-product kernel when it can, so its weights exist nowhere. The probe
calls such a layer with `return_attention_scores=True` (public API: the layer then
computes the weights explicitly, the same attention up to float rounding), keeps the
weights for its statistics and hands on exactly what the original call returns.
"""

import dataclasses
import inspect

import keras

from keras_initkit import _keras_private
from keras_initkit.probe import backend


def is_attention(layer):
    """A `MultiHeadAttention` (or subclass) whose call can return its weights."""
    return isinstance(layer, keras.layers.MultiHeadAttention) and (
        "return_attention_scores" in inspect.signature(layer.call).parameters
    )


@dataclasses.dataclass
class Weights:
    """The attention weights of one call.

    Attributes:
        scores: `(batch, heads, queries, keys)` softmax weights.
        query_mask: `(batch, queries)` booleans (padded queries excluded), or None.
        key_mask: booleans broadcasting to `(batch, queries, keys)`: the keys each
            query may attend to (the keys' Keras mask, `attention_mask`, causal), or
            None for every key.
    """

    scores: object
    query_mask: object
    key_mask: object


def _allowed_keys(query, value, key, kwargs):
    """The keys each query may attend to, as `MultiHeadAttention` masks them."""
    masks = [_keras_private.keras_mask(t) for t in (value, key) if t is not None]
    masks = [keras.ops.cast(m, "bool")[:, None, :] for m in masks if m is not None]
    if kwargs.get("attention_mask") is not None:
        masks.append(keras.ops.cast(kwargs["attention_mask"], "bool"))
    if kwargs.get("use_causal_mask"):
        queries, keys = query.shape[1], (value if key is None else key).shape[1]
        masks.append(keras.ops.tril(keras.ops.ones((queries, keys), "bool"))[None])
    if not masks:
        return None
    allowed = masks[0]
    for m in masks[1:]:
        allowed = keras.ops.logical_and(allowed, m)
    return allowed


def call_attention(layer, call, args, kwargs):
    """Run `call` with the attention weights returned; `(Weights, original output)`."""
    query, value, key = (
        args[i] if len(args) > i else kwargs.get(name)
        for i, name in enumerate(("query", "value", "key"))
    )
    # Read the masks first: the layer clears its inputs' masks when called.
    query_mask = _keras_private.keras_mask(query)
    allowed = _allowed_keys(query, value, key, kwargs)
    wanted = kwargs.get("return_attention_scores", False)
    result = call(*args, **{**kwargs, "return_attention_scores": True})
    scores = result[1]
    if not wanted:  # what the call would have returned: the scores left out
        rest = [result[0], *result[2:]]
        result = rest[0] if len(rest) == 1 else tuple(rest)
    return Weights(scores, query_mask, allowed), result


def entropy(weights):
    """Per head: mean normalized entropy and mean largest weight over valid query rows,
    and the share of valid rows: three `(heads,)` / scalar tensors.

    A row's normalized entropy is `-Σ p log p / log n`, n the number of keys it may
    attend to (`Weights.key_mask`): 1 for uniform attention, 0 for one-hot. Rows of padded queries and
    rows attending to fewer than two keys are left out.
    """
    p = keras.ops.cast(weights.scores, "float32")
    rows = keras.ops.zeros_like(p[..., 0])  # (B, N, Tq): also where a dimension is unknown
    if weights.key_mask is None:
        keys = p.shape[-1]
        if keys is None:  # a traced length
            keys = keras.ops.cast(keras.ops.shape(p)[-1], "float32")
        attended = rows + keys
    else:
        allowed = keras.ops.cast(weights.key_mask, "float32")[:, None]  # (B, 1, Tq|1, Tk)
        attended = rows + keras.ops.sum(allowed, axis=-1)
    plogp = backend.current().plogp(p)
    h = -keras.ops.sum(plogp, axis=-1) / keras.ops.log(keras.ops.maximum(attended, 2.0))
    valid = keras.ops.cast(attended >= 2, "float32")
    if weights.query_mask is not None:
        valid = valid * keras.ops.cast(weights.query_mask, "float32")[:, None, :]
    top = keras.ops.max(p, axis=-1)
    axes = (0, 2)
    count = keras.ops.mean(valid, axis=axes)  # (N,) share of valid rows per head
    return (
        keras.ops.mean(h * valid, axis=axes),
        keras.ops.mean(top * valid, axis=axes),
        count,
    )
