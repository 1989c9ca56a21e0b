"""`InitkitWarning`, and how a monitor's findings become warnings at the user's line."""

import os
import sys
import warnings

from keras_initkit.checks.summary import blocks

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


class RuleWarnings:
    """When a monitor warns: a findings block per rule (its layers as ranges in forward
    order, the worst value, the fix) when the rule first fires in a fit; afterwards only
    when it spreads (to at least 25% more layers, and one more at least) or worsens
    markedly (its worst value 1.5 times further in the rule's direction), at most once
    per epoch per rule.
    """

    SPREAD = 1.25
    WORSEN = 1.5

    def __init__(self):
        self._state = {}  # rule -> (number of layers, worst value, epoch) when warned

    def _news(self, block, epoch, below):
        previous = self._state.get(block.rule)
        if previous is None:
            return True
        count, worst, when = previous
        if when == epoch:
            return False
        spread = len(block.layers) >= max(count + 1, count * self.SPREAD)
        value = block.worst.value
        if value is None or worst is None:
            return spread
        worse = value < worst / self.WORSEN if below else value > worst * self.WORSEN
        return spread or worse

    def texts(self, current, step, epoch, order, fixes, below=(), scalars=None):
        """The warnings for one update, from every finding `current`ly firing; `scalars`
        (the layers' latest values) keep runs whole across layers a rule does not
        measure (`Block.text`)."""
        for block in blocks(current, fixes, below):
            if not self._news(block, epoch, block.rule in below):
                continue
            self._state[block.rule] = (len(block.layers), block.worst.value, epoch)
            yield (
                block.worst.message if len(block.layers) == 1 else block.text(order, step, scalars)
            )
