"""`InitkitWarning`, and how a monitor's findings become warnings at the user's line."""

import os
import sys
import warnings

# A warning that groups several layers' findings lists at most this many of them.
MAX_LISTED = 10
_INTERNAL = ("keras_initkit", "keras", "tensorflow", "jax", "torch", "tf_keras")


class InitkitWarning(UserWarning):
    """A training-health finding of a keras_initkit monitor (a layer crossed a threshold).

    Issued once per layer, rule and fit. Filter it like any warning:

    ```python
    import warnings

    warnings.filterwarnings("error", category=keras_initkit.callbacks.InitkitWarning)
    ```
    """


def user_stacklevel():
    """`warnings.warn`'s stacklevel that names the first frame outside Keras and us.

    A finding is raised deep inside `model.fit`; pointing the warning at the user's
    own line (usually the `fit` call) reads better than at this file, and makes
    Python's per-location warning filters act on user code.
    """
    roots = tuple(
        os.path.dirname(module.__file__) + os.sep
        for name in _INTERNAL
        if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)
    )
    frame, level = sys._getframe(1), 1  # the frame that calls `warn`
    while frame is not None and frame.f_code.co_filename.startswith(roots):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 2


def warn(message, category=InitkitWarning):
    """Issue `message` at the user's line (see `user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())


def grouped(found, step):
    """The warning texts for one update's new findings, one per rule and fix.

    `found` holds `(layer, rule, observation, fix, message)`; a rule with one layer
    warns its finding's message, several layers share one warning: the fix once, then
    a line per layer (at most `MAX_LISTED`).
    """
    groups = {}
    for layer, rule, observation, fix, text in found:
        groups.setdefault((rule, fix), []).append((layer, observation, text))
    for (_, fix), items in groups.items():
        if len(items) == 1:
            yield items[0][2]
            continue
        lines = [f"{len(items)} layers (step {step}): {fix or 'see below'}"]
        lines += [f"  {layer}: {observation}" for layer, observation, _ in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"  ... and {len(items) - MAX_LISTED} more (`monitor.findings` lists all)")
        yield "\n".join(lines)
