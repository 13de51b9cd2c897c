"""The ``scaleseg`` command line: ``main(argv=None)`` so tests call it in-process."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from ._common import CLIError

__all__ = ["main", "build_parser", "Terminated"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, ``scancel``, a container stop): handled as Ctrl-C is -- the
    run's lock is released, ``run.json`` says ``interrupted`` and a re-run resumes."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, the first SIGTERM raises :class:`Terminated` in the main
    thread; a second one during the clean-up gets the handler from before (by default: the
    process ends). Not installed outside the main thread, where SIGTERM is ignored, or where
    the handler was not set from Python."""
    previous = signal.getsignal(signal.SIGTERM)
    if (
        threading.current_thread() is not threading.main_thread()
        or previous is None
        or previous == signal.SIG_IGN
    ):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_COMMANDS = (
    "_convert",
    "_demo_data",
    "_info",
    "_config",
    "_gt",
    "_evaluate",
    "_train",
    "_predict",
    "_instances",
    "_rois",
    "_qa",
    "_select",
)


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="scaleseg",
        description="Cluster-scale, quality-controlled segmentation of ambiguous bioimages "
        "(the deepflash2 method on Dask and OME-Zarr).",
    )
    parser.add_argument("--version", action="version", version=f"scaleseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        import_module(f"{__name__}.{name}").register(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Our messages at INFO on stderr; third-party chatter (distributed) only from WARNING."""
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for h in root.handlers:
        h.setLevel(logging.DEBUG if verbose else logging.WARNING)
        h.setFormatter(fmt)
    own = logging.getLogger("scaleseg")
    own.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not own.handlers:
        from ._common import _StderrHandler

        own.addHandler(_StderrHandler())  # whatever sys.stderr is when a record is written
        own.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 usage error)."""
    from ..config import ConfigError, load_config

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    args.argv = ["scaleseg", *(sys.argv[1:] if argv is None else argv)]
    try:
        cfg = load_config(getattr(args, "config", None))
        with _sigterm_as_interrupt():
            return int(args.func(args, cfg))
    except (
        CLIError,
        ConfigError,
        ValueError,
        KeyError,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        RuntimeError,
    ) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"scaleseg {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except OSError as exc:  # not a directory, read-only file system, disk full, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"scaleseg {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(f"scaleseg {args.command}: {'terminated (SIGTERM)' if term else 'interrupted'}",
              file=sys.stderr)  # fmt: skip
        return 143 if term else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
