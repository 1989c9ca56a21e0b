"""Argument checks shared by the benchmark scripts: bad input is an error, never a default.

The scripts run as `python benchmarks/<script>.py`, so their own folder is on `sys.path`
and `import _cli` finds this module.
"""

import argparse


def positive_int(text):
    """An argparse `type`: an int >= 1 (0 and negatives are errors, not "the default")."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def known_names(parser, flag, value, known):
    """`value` split at commas, every name one of `known`; otherwise a parser error."""
    given = value.split(",")
    unknown = [name for name in given if name not in known]
    if unknown:
        parser.error(f"{flag} takes {', '.join(known)}, comma-separated. Received: {unknown}")
    return given
