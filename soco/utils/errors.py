"""The project's own errors (bad config, bad file, bad weights) and the tools' one-line report.

Every error a user can fix by changing an input derives from :class:`InputError` (a
``ValueError``, so callers that catch ``ValueError`` keep working); its message names the key or
file and the fix. The tools run their ``main`` through :func:`run_tool`: such an error prints
one line ``error: ...`` and exits with :data:`EXIT_INPUT_ERROR`; the traceback is shown only with
``--debug`` or the environment variable ``SOCO_DEBUG=1``. Any other exception is a bug and keeps
its traceback.
"""

import argparse
import os
import sys
from typing import Any, Callable

__all__ = [
    "DEBUG_ENV",
    "EXIT_INPUT_ERROR",
    "InputError",
    "ConfigError",
    "ConfigKeyError",
    "add_debug_argument",
    "run_tool",
    "debugging",
    "print_input_error",
]

DEBUG_ENV = "SOCO_DEBUG"
EXIT_INPUT_ERROR = 2


class InputError(ValueError):
    """Bad input the user can fix; the message names the key or file and the remedy."""


class ConfigError(InputError):
    """A config value that is out of its choices, or contradicts another key or the data."""


class ConfigKeyError(ConfigError, KeyError):
    """A config key that does not exist (also a ``KeyError``, as Detectron2 raises it)."""

    __str__ = BaseException.__str__  # KeyError would quote the message


def add_debug_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (tracebacks for input errors too) to a tool's parser and return it."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of input errors (also: {DEBUG_ENV}=1)")
    return parser


def run_tool(main: Callable[..., Any], *args: Any, debug: bool = False) -> int:
    """``main(*args)`` (its return value, 0 for None); an :class:`InputError` prints one line on
    stderr and returns :data:`EXIT_INPUT_ERROR`, unless ``debug`` or ``SOCO_DEBUG`` is set."""
    previous = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # processes the tool starts (e.g. the launcher's workers) inherit it
    try:
        result = main(*args)
    except InputError as exc:
        if debugging():
            raise
        print_input_error(exc)
        return EXIT_INPUT_ERROR
    finally:
        if previous is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = previous
    return int(result or 0)


def debugging() -> bool:
    """Whether input errors keep their traceback (``--debug`` or ``SOCO_DEBUG``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def print_input_error(exc: Exception) -> None:
    """The one-line report of an input error (or any error a tool reports as one) on stderr."""
    print("error: " + " ".join(str(exc).split()), file=sys.stderr, flush=True)
