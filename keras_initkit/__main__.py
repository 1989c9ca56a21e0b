"""`python -m keras_initkit`: the `keras-initkit` command."""

import sys

from keras_initkit.cli import main

sys.exit(main())
