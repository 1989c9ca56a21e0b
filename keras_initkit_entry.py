"""Launcher of the `keras-initkit` console script: the CLI without `import keras`.

`import keras_initkit` imports Keras so that every serializable class is registered, and
Keras imports its backend (TensorFlow by default: seconds of start-up and its log
messages). `keras-initkit report` reads event files and needs none of that, so this
launcher gives `keras_initkit.cli` a bare parent package (its `__init__` not executed)
when the process has not imported keras_initkit yet. Submodules import as usual, so a
command that needs Keras (e.g. the fallback thresholds) still gets it.
"""

import importlib.util
import sys


def main(argv=None):
    if "keras_initkit" not in sys.modules:
        spec = importlib.util.find_spec("keras_initkit")
        if spec is not None and spec.submodule_search_locations:
            sys.modules["keras_initkit"] = importlib.util.module_from_spec(spec)
    from keras_initkit.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
