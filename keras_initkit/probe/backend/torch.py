"""torch: eager passes under `torch.no_grad`, gradients by `torch.autograd.grad`."""

import contextlib

import keras
import torch

from keras_initkit.probe.backend import Lazy
from keras_initkit.probe.backend.generic import (  # noqa: F401
    EAGER_CALLS,
    GRADIENT_EAGER_CALLS,
    REUSES_BATCH_MOMENTS,
    compile_function,
    discarding_updates,
    histogram,
    identity,
    moments,
    positive_rate,
    run_after,
    scope,
    squared_norms,
)


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
