"""Attention layers: the attention weights of one call, without changing its output path.

`MultiHeadAttention` (and subclasses such as keras_hub's `CachedMultiHeadAttention`)
runs a fused dot-product kernel when it can, so its weights exist nowhere. The probe
calls such a layer with `return_attention_scores=True` (public API: the layer then
computes the weights explicitly, the same attention up to float rounding), keeps the
weights for its statistics and hands on exactly what the original call returns.

Keras' single-head `Attention` (Luong, dot product) and `AdditiveAttention` (Bahdanau)
always compute their weights explicitly; with `return_attention_scores=True` the same
ops return them beside the very same output. Their weights, `(batch, queries, keys)`,
get a heads axis of one, so that one `entropy` measures both kinds of layer.

Other attention layers (keras_hub's `LlamaAttention`, `GemmaAttention`, `Qwen3Attention`,
`MistralAttention`, `Phi3Attention`, ...) return no weights. A layer that tracks a
`Softmax` layer and a query projection (a sublayer named `query...`) is measured as one:
its weights are what its `Softmax` returns, or, where it calls
`keras.ops.dot_product_attention` instead (keras_hub does on JAX and torch), computed
beside that call from its own query, key, mask, bias and scale. The fused call still
computes the output: the layer returns exactly what it returns unprobed.
"""

import dataclasses
import inspect

import keras

from keras_initkit import _keras_private
from keras_initkit._keras_private import shadowing, sublayers
from keras_initkit.probe import backend

# Layers whose call takes query, value, key and their masks as `MultiHeadAttention`'s
# does, and returns `(batch, heads, queries, keys)` weights beside the output.
_MULTI_HEAD = (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention)


def is_attention(layer):
    """A `MultiHeadAttention`, `GroupQueryAttention`, `Attention` or `AdditiveAttention`
    (or subclass) whose call can return its weights, or another attention layer (see
    `_softmax_of`)."""
    if isinstance(layer, (*_MULTI_HEAD, keras.layers.Attention)):
        return "return_attention_scores" in inspect.signature(layer.call).parameters
    return _softmax_of(layer) is not None


def _softmax_of(layer):
    """The `Softmax` layer of an attention layer that returns no weights: a layer that
    tracks exactly one `Softmax` and a query projection (a sublayer named `query...`,
    keras_hub's `_query_dense`); None for any other layer."""
    if isinstance(layer, (keras.Model, keras.layers.RNN, *_MULTI_HEAD, keras.layers.Attention)):
        return None
    own = sublayers(layer, recursive=False)
    softmaxes = [s for s in own if isinstance(s, keras.layers.Softmax)]
    if len(softmaxes) != 1 or not any(s.name.startswith("query") for s in own):
        return None
    return softmaxes[0]


@dataclasses.dataclass
class Weights:
    """The attention weights of one call.

    Attributes:
        scores: `(batch, heads, queries, keys)` softmax weights (one head for a
            single-head layer).
        query_mask: `(batch, queries)` booleans (padded queries excluded), or None.
        key_mask: booleans broadcasting to `(batch, queries, keys)`: the keys each
            query may attend to (the keys' Keras mask or `Attention`'s value mask,
            `attention_mask`, causal), or None for every key.
    """

    scores: object
    query_mask: object
    key_mask: object


def _mask(kwargs, name, tensor):
    """The mask passed as `name=`, else the Keras mask of `tensor` (Keras' default)."""
    given = kwargs.get(name)
    if given is not None or tensor is None:
        return given
    return _keras_private.keras_mask(tensor)


def _causal(queries, keys):
    """`(queries, keys)` booleans: query i may attend to keys 0..i. From the lengths as
    tensors where a traced pass does not know them (variable-length batches)."""
    return keras.ops.arange(queries)[:, None] >= keras.ops.arange(keys)[None, :]


def _allowed_keys(query, value, key, kwargs):
    """The keys each query may attend to, as `MultiHeadAttention` masks them."""
    masks = [_mask(kwargs, f"{n}_mask", t) for n, t in (("value", value), ("key", key))]
    masks = [keras.ops.cast(m, "bool")[:, None, :] for m in masks if m is not None]
    if kwargs.get("attention_mask") is not None:
        masks.append(keras.ops.cast(kwargs["attention_mask"], "bool"))
    if kwargs.get("use_causal_mask"):
        keys = keras.ops.shape(value if key is None else key)[1]
        masks.append(_causal(keras.ops.shape(query)[1], keys)[None])
    if not masks:
        return None
    allowed = masks[0]
    for m in masks[1:]:
        allowed = keras.ops.logical_and(allowed, m)
    return allowed


def _padded_queries(attention_mask):
    """In self-attention, the `(batch, queries)` mask of the real queries read off an
    `attention_mask`, or None: a position is padding where it may not attend to itself
    (the mask's diagonal). keras_hub's encoders pass their `padding_mask` so, as a
    `(batch, 1, keys)` key mask (its one row is every query's), and its decoders as
    that mask and-ed with the causal one (whose diagonal is true)."""
    if attention_mask is None or len(attention_mask.shape) != 3:
        return None
    if attention_mask.shape[1] == 1:
        return attention_mask[:, 0, :]
    return keras.ops.diagonal(attention_mask, axis1=1, axis2=2)


def call_attention(layer, call, args, kwargs):
    """Run `call` with the attention weights returned; `(Weights, original output)`."""
    if isinstance(layer, keras.layers.Attention):
        return _call_single_head(layer, call, args, kwargs)
    if not isinstance(layer, _MULTI_HEAD):
        return _call_watched(layer, call, args, kwargs)
    query, value, key = (
        args[i] if len(args) > i else kwargs.get(name)
        for i, name in enumerate(("query", "value", "key"))
    )
    # Read the masks first: the layer clears its inputs' masks when called.
    query_mask = _mask(kwargs, "query_mask", query)
    if query_mask is None and value is query and key in (None, query):
        query_mask = _padded_queries(kwargs.get("attention_mask"))
    query_mask = None if query_mask is None else keras.ops.cast(query_mask, "bool")
    allowed = _allowed_keys(query, value, key, kwargs)
    wanted = kwargs.get("return_attention_scores", False)
    result = call(*args, **{**kwargs, "return_attention_scores": True})
    return Weights(result[1], query_mask, allowed), _as_called(result, wanted)


def _as_called(result, wanted):
    """What the call would have returned: `result`, the scores (its second element) left
    out unless the caller asked for them."""
    if wanted:
        return result
    rest = [result[0], *result[2:]]
    return rest[0] if len(rest) == 1 else tuple(rest)


def _call_single_head(layer, call, args, kwargs):
    """`call_attention` for an `Attention` or `AdditiveAttention` layer, with the masks
    the layer itself applies; its arguments are bound by name (`mask` and
    `return_attention_scores` may come positionally). Its `mask` is
    `[query_mask, value_mask]` (Keras fills it from its inputs' masks). A masked value
    and the causal mask hide keys (their weights underflow to 0; a query left with no
    key gets meaningless weights, `entropy` leaves its row out); a masked query only
    has its output zeroed, and is left out. A key's own mask is not used by the layer,
    nor here."""
    signature = inspect.signature(type(layer).call)
    bound = signature.bind(layer, *args, **kwargs)
    given = {
        **{name: p.default for name, p in signature.parameters.items()},
        **bound.arguments,
    }
    masks = list(given.get("mask") or ()) + [None, None]
    query_mask, value_mask = masks[0], masks[1]
    wanted = given.get("return_attention_scores", False)
    bound.arguments["return_attention_scores"] = True
    result = call(*bound.args[1:], **bound.kwargs)
    scores = result[1]
    shape = keras.ops.shape(scores)
    queries, keys = shape[-2], shape[-1]
    allowed = None
    if value_mask is not None:
        allowed = keras.ops.expand_dims(keras.ops.cast(value_mask, "bool"), -2)
    if given.get("use_causal_mask"):
        causal = _causal(queries, keys)
        allowed = causal if allowed is None else keras.ops.logical_and(allowed, causal)
    if query_mask is not None:
        query_mask = keras.ops.cast(query_mask, "bool")
    if len(scores.shape) == 3:
        if allowed is not None and len(allowed.shape) == 2:  # causal alone
            allowed = allowed[None]
        weights = Weights(keras.ops.expand_dims(scores, 1), query_mask, allowed)
    else:  # inputs `(batch, ..., steps, dim)`: the leading axes are one batch axis
        if allowed is not None:
            allowed = keras.ops.logical_and(allowed, keras.ops.ones_like(scores, "bool"))
            allowed = keras.ops.reshape(allowed, (-1, queries, keys))
        if query_mask is not None:
            query_mask = keras.ops.reshape(query_mask, (-1, queries))
        weights = Weights(keras.ops.reshape(scores, (-1, 1, queries, keys)), query_mask, allowed)
    return weights, _as_called(result, wanted)


def _call_watched(layer, call, args, kwargs):
    """`call_attention` for a layer that returns no weights (`_softmax_of`): its
    `Softmax` layer's output, or the weights of its `keras.ops.dot_product_attention`
    call, computed beside it (`_fused_weights`); `Weights(None, ...)` when the call ran
    neither (its statistics are then absent)."""
    seen = []
    softmax = _softmax_of(layer)
    softmax_call, fused = softmax.call, keras.ops.dot_product_attention

    def watched_softmax(inputs, mask=None):
        weights = softmax_call(inputs, mask=mask)
        seen.append(_flattened(weights, None if mask is None else keras.ops.cast(mask, "bool")))
        return weights

    def watched_fused(query, key, value, bias=None, mask=None, scale=None, is_causal=False, **kw):
        seen.append(_fused_weights(query, key, bias, mask, scale, is_causal, kw))
        return fused(query, key, value, bias, mask, scale, is_causal, **kw)

    with (
        shadowing(softmax, call=watched_softmax),
        shadowing(keras.ops, dot_product_attention=watched_fused),
    ):
        output = call(*args, **kwargs)
    return (seen[0] if seen else Weights(None, None, None)), output


def _fused_weights(query, key, bias, mask, scale, is_causal, options):
    """The softmax weights `keras.ops.dot_product_attention(query, key, ...)` attends
    with, as `Weights`: query `(B, T, N, H)`, key `(B, S, K, H)` (grouped-query
    attention where K < N: query head n reads key head n // (N / K)), in float32."""
    ops = keras.ops
    groups = query.shape[2] // key.shape[2]
    if groups > 1:
        key = ops.repeat(key, groups, axis=2)
    logits = ops.einsum("btnh,bsnh->bnts", ops.cast(query, "float32"), ops.cast(key, "float32"))
    logits = logits * (1.0 / float(query.shape[-1]) ** 0.5 if scale is None else scale)
    if bias is not None:
        logits = logits + ops.cast(bias, "float32")
    cap = options.get("attn_logits_soft_cap")
    if cap is not None:
        logits = cap * ops.tanh(logits / cap)
    allowed = None if mask is None else ops.cast(mask, "bool")
    if is_causal:
        shape = ops.shape(logits)
        causal = _causal(shape[2], shape[3])
        allowed = causal if allowed is None else ops.logical_and(allowed, causal)
    if allowed is not None:  # `_flattened` broadcasts it against the weights
        logits = ops.where(allowed, logits, -1e30)
    return _flattened(ops.softmax(logits, axis=-1), allowed)


def _flattened(scores, allowed):
    """`Weights` of softmax weights `(B, ..., queries, keys)`: the axes between batch and
    queries become the heads (keras_hub's Gemma has `(B, K, G, T, S)`); the allowed keys
    (a mask broadcasting to the scores) are the first head's."""
    ops = keras.ops
    shape = ops.shape(scores)
    queries, keys = shape[-2], shape[-1]
    if allowed is not None:  # broadcast against the scores as they are, then flattened
        allowed = ops.logical_and(allowed, ops.ones_like(scores, "bool"))
        allowed = ops.reshape(allowed, (shape[0], -1, queries, keys))[:, 0]
    return Weights(ops.reshape(scores, (shape[0], -1, queries, keys)), None, allowed)


def entropy(weights):
    """Per head: mean normalized entropy and mean largest weight over valid query rows,
    and the share of valid rows: three `(heads,)` tensors (one head for a single-head
    layer).

    A row's normalized entropy is `-Σ p log p / log n`, n the number of keys it may
    attend to (`Weights.key_mask`): 1 for uniform attention, 0 for one-hot. Rows of padded queries and
    rows attending to fewer than two keys are left out, whatever their weights: a row
    with every key masked holds no distribution (Keras' `Attention` in float16 on torch
    gives it NaN).
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
    kept = valid > 0  # not `* valid`: a left-out row's weights may be NaN
    return (
        keras.ops.mean(keras.ops.where(kept, h, 0.0), axis=axes),
        keras.ops.mean(keras.ops.where(kept, top, 0.0), axis=axes),
        count,
    )
