"""torch: eager passes under `torch.no_grad`, gradients by `torch.autograd.grad`."""

import keras
import torch

from keras_initkit.probe.backend.generic import (  # noqa: F401
    compile_function,
    discarding_updates,
    histogram,
    identity,
    run_after,
)


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
                loss = loss_of(x, y)
            grads = torch.autograd.grad(loss, values, allow_unused=True) if values else []
        grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, values)]
        return loss.detach(), grads

    return step
