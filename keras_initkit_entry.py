"""Entry points that must not import Keras: `keras-initkit` and the TensorBoard plugin.

`import keras_initkit` imports Keras so that every serializable class is registered, and
Keras imports its backend (TensorFlow by default: seconds of start-up and its log
messages; a failing backend import fails it). Reading event files needs none of that:

- `main`, the `keras-initkit` console script (also `python -m keras_initkit_entry`),
  runs `keras_initkit.cli` with a bare parent package: `keras_initkit/__init__.py` is not
  executed, submodules import as usual (a command that needs Keras, such as the fallback
  thresholds, still gets it).
- `InitkitLoader`, the `tensorboard_plugins` entry point, loads the `initkit` plugin the
  same way when TensorBoard starts, then removes the bare package again, so a later
  `import keras_initkit` in the same process (TensorBoard started from a notebook) is the
  real one. A plugin that fails to load is logged and skipped by TensorBoard, which
  keeps running.
"""

import importlib
import importlib.util
import sys

from tensorboard.plugins import base_plugin

PACKAGE = "keras_initkit"


def import_without_package_init(name, keep=True):
    """Import the submodule `name` of keras_initkit without running the package's `__init__`.

    When the process has already imported keras_initkit, a plain import. Otherwise the
    package is put in `sys.modules` unexecuted; with `keep=False` it and the submodules
    imported under it are removed again afterwards (the returned module keeps working).
    """
    if PACKAGE in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module(name)
    before = set(sys.modules)
    sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
    try:
        return importlib.import_module(name)
    finally:
        if not keep:
            for module in set(sys.modules) - before:
                if module == PACKAGE or module.startswith(PACKAGE + "."):
                    del sys.modules[module]


def main(argv=None):
    """The `keras-initkit` command; returns its exit code."""
    return import_without_package_init("keras_initkit.cli").main(argv)


class InitkitLoader(base_plugin.TBLoader):
    """TensorBoard's loader of the `initkit` plugin (`keras_initkit.dashboard.plugin`)."""

    def load(self, context):
        plugin = import_without_package_init("keras_initkit.dashboard.plugin", keep=False)
        return plugin.InitkitPlugin(context)


if __name__ == "__main__":
    sys.exit(main())
