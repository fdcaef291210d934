"""The `imagegen` command: client commands here, others from installed distributions by name.

A distribution adds commands by naming a callable in the ``imagegen.commands``
entry-point group; the callable receives the command line after ``imagegen``
(its own name first) and returns the exit code. The server distribution
registers ``serve``, ``gateway``, ``admin`` and ``healthcheck`` this way, so
the client knows nothing of the server and the server nothing of the client.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

COMMANDS_GROUP = "imagegen.commands"

Command = Callable[[list[str]], int]


def installed_commands() -> dict[str, EntryPoint]:
    """The commands other installed distributions register, by name."""
    return {point.name: point for point in entry_points(group=COMMANDS_GROUP)}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imagegen`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    commands = installed_commands()
    if argv and argv[0] in commands:
        command: Command = commands[argv[0]].load()
        return command(argv)
    try:
        from imagegen_client.cli import main as client_main
    except ImportError as error:  # rich is missing: the SDK was installed without [cli]
        print(
            f"imagegen: the client commands need `pip install 'imagegen-client[cli]'` ({error})",
            file=sys.stderr,
        )
        return 2
    return client_main(argv, other_commands=sorted(commands))


if __name__ == "__main__":
    sys.exit(main())
