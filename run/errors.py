"""
run/errors.py: bad input, as every command of this repository reports it, and the argument parser that raises it.

A UsageError is one line naming the argument or the file and what is allowed; the commands print it and exit
with status 2. Modules that only need to refuse input import this, not the run's configuration.
"""
import argparse
import math
import os
import signal
import sys


class UsageError(Exception):
    """Bad input. Reported as one line naming the argument and what is allowed; exit status 2."""


class NonFiniteError(RuntimeError):
    """The loss or a weight stopped being finite; exit status 1, last good checkpoint untouched."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; its message says whether, and how, the run can be continued. Exit status 128 + the
    signal's number: 130 for Ctrl-C, 143 for SIGTERM."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class DiskError(OSError):
    """Writing an output file failed (a full disk, ...); exit status 2, last good checkpoint untouched."""


def command_line(main, argv=None, name=None):
    """Run main(argv) as a command: its errors become one line on stderr and an exit status. 2 bad input or a
    failed write (a full disk), which a changed command fixes; 1 what it does not (a non-finite loss, the network);
    130 / 143 interrupted by Ctrl-C / SIGTERM."""
    name = name or os.path.basename(sys.argv[0])
    try:
        main(argv)
        return 0
    except (UsageError, DiskError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process finds the same bad input
            print(f"{name}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the network (hub.HubOfflineError, DownloadError)
        print(f"{name}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"{name}: interrupted; {str(e) or 'nothing was written, so nothing can be resumed'}", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() callers get an exception
        raise UsageError(message)


def bounded(kind, low, high=None, strict=False):
    """An argparse type: an int or float in [low, high) (or (low, high) with strict)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not (math.isfinite(value) and (value > low if strict else value >= low) and (high is None or value < high)):
            bound = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and < {high}")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
              list: "a list", None: "null"}


def fits(value, kinds):
    """Whether a value read from JSON or a checkpoint is of one of `kinds` (types, None for null): a bool is no
    int, an int is a float."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return any(value is None if k is None else (isinstance(value, k) and (k is bool or not isinstance(value, bool)))
               or (k is float and isinstance(value, int) and not isinstance(value, bool)) for k in kinds)
