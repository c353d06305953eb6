"""posestream: real-time multi-person pose estimation for cameras and video files.

Subcommands are registered by the installed packages (entry point group ``posestream.commands``;
a name ``a.b`` is the command ``posestream a b``), so every package brings its own commands and
``stream`` never imports ``training``. Each command's help is its module docstring.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points

__all__ = ["main", "build_parser"]

ENTRY_POINT_GROUP = "posestream.commands"


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2, no traceback."""

    user_error = True


def _commands() -> dict[tuple[str, ...], str]:
    eps = entry_points(group=ENTRY_POINT_GROUP)
    return {tuple(ep.name.split(".")): ep.value for ep in eps}


def _summary(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (what, and where to look), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _named_command(commands: dict, argv: list[str] | None) -> tuple[str, ...] | None:
    """The command path ``argv`` names (``("run",)``, ``("bench", "pipeline")``), or None."""
    words = [a for a in (argv or []) if not a.startswith("-")]
    for path in commands:
        if tuple(words[:len(path)]) == path:
            return path
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``argv`` naming one command, only that command's module is imported
    (its options and help are the same; a start-up of ``posestream run`` skips importing the ~20
    other command modules)."""
    parser = _Parser(
        prog="posestream", description=__doc__.strip().splitlines()[0],
        epilog="Run `posestream COMMAND --help` for a command's options.")
    from posestream import __version__

    parser.add_argument("--version", action="version", version=f"posestream {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): sub}
    commands = _commands()
    named = _named_command(commands, argv)
    if named is not None:
        commands = {named: commands[named]}
    for path, target in sorted(commands.items()):
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in groups:
                gp = groups[path[:depth - 1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = gp.add_subparsers(dest="_".join(prefix), metavar="COMMAND")
                gp.set_defaults(_group=gp)
        module = importlib.import_module(target)
        doc = module.__doc__ or ""
        p = groups[path[:-1]].add_parser(path[-1], help=_summary(doc), description=doc,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = getattr(args, "_run", None)
    if run is None:
        (getattr(args, "_group", None) or parser).print_help()
        return 2
    try:
        return int(run(args) or 0)
    except UserError as e:
        print(f"posestream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posestream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
