"""torch: eager passes under `torch.no_grad`, gradients by `torch.autograd.grad`."""

import contextlib

import keras
import torch

from keras_initkit.probe.backend import Lazy, generic
from keras_initkit.probe.backend.generic import (  # noqa: F401
    COMPILES_LSUV,
    EAGER_CALLS,
    GRADIENT_EAGER_CALLS,
    REUSES_BATCH_MOMENTS,
    compile_arrays,
    compile_function,
    discarding_updates,
    eager_pass,
    histogram,
    identity,
    positive_rate,
    run_after,
    scope,
    squared_norms,
)


def to_numpy(x):
    """`Tensor.numpy` after leaving the device (NumPy warns converting a tensor, whose
    `__array__` takes no `copy`); bfloat16, which NumPy lacks, as Keras converts it."""
    if isinstance(x, keras.Variable):
        x = x.value
    if isinstance(x, torch.Tensor) and x.dtype != torch.bfloat16:
        # A copy: `numpy()` of a CPU tensor shares its memory, and a parameter is
        # updated in place by the optimizer.
        return x.detach().cpu().numpy().copy()
    return keras.ops.convert_to_numpy(x)


def on_host(x):
    return x.device.type == "cpu"


@contextlib.contextmanager
def preserving_rng():
    """Keras' torch dropout with an unseeded SeedGenerator draws from torch's global
    generator (and a recurrent layer draws its dropout masks even when not training):
    restore it, so a probe leaves the draws of training unchanged."""
    state = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def moments(x, axes):
    """Over every axis of a large tensor, two kernels (`mean`, `var`: exact to float32
    rounding) instead of four eager ops (mean, subtract, square, mean) and their
    temporaries: 9 against 23 ms CPU over a Transformer's 24 moment sites. Per channel
    (`var` over some axes is 2-7x slower than the four ops on ResNet50's shapes) and
    under 2^16 values, the four ops. (`var_mean`, one kernel, took 55 ms, and its mean
    of values holding an inf is NaN, where `mean`'s is inf.)"""
    x = keras.ops.cast(x, "float32")
    if len(axes) < x.ndim or x.numel() < 2**16:
        return generic.moments(x, axes)
    return torch.mean(x), torch.var(x, correction=0)


def plogp(p):
    """One kernel (`xlogy`) instead of three (maximum, log, multiply)."""
    return torch.special.xlogy(p, p)


def no_grad():
    """An eager torch pass builds an autograd graph holding every activation unless told
    not to; the probe, LSUV and recalibration only read values."""
    return torch.no_grad()


def value_and_grad(loss_of, model, variables):
    """`torch.autograd.grad` of a stateless pass: no `.grad` attribute is touched."""

    def step(x, y):
        with torch.enable_grad():
            values = [v.value for v in variables]
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values)), collect_losses=True
            ):
                loss, aux = loss_of(x, y)
            grads = torch.autograd.grad(loss, values, allow_unused=True) if values else []
        grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, values)]
        return loss.detach(), grads, aux.detach()

    return Lazy(step, None, "GRADIENT_EAGER_CALLS")
