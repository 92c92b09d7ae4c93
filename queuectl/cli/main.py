"""The ``queuectl`` command line: the top-level group, the home, errors and exit codes.

The commands live in ``submit``, ``jobs``, ``workers``, ``maintenance``, ``workflow``,
``backup`` and ``serve`` (thin click commands
over ``Store`` and ``WorkerPool``), and how they print in ``render``. The group loads only the
module of the command being run (``COMMANDS``), and the domain modules are imported inside
the commands, so a call pays only for what it uses. Only ``cli/`` imports click and tabulate.
Errors from the domain arrive as ``QueueError`` subclasses and leave as one line on stderr
with the class's exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from queuectl import __version__
from queuectl.cli.render import fail
from queuectl.errors import QueueError, UsageError

if TYPE_CHECKING:
    from queuectl.storage.store import Store

__all__ = ["COMMANDS", "cli", "main"]

ORIGINAL_UMASK = 0o022

COMMANDS: Final = {
    "add": "submit:add",
    "enqueue": "submit:enqueue",
    "list": "jobs:list_jobs",
    "show": "jobs:show",
    "cancel": "jobs:cancel",
    "logs": "jobs:logs",
    "wait": "jobs:wait",
    "history": "jobs:history",
    "stats": "jobs:stats",
    "worker": "workers:worker",
    "status": "workers:status",
    "dlq": "maintenance:dlq",
    "config": "maintenance:config",
    "journal": "maintenance:journal",
    "fsck": "maintenance:fsck",
    "cleanup": "maintenance:cleanup",
    "backup": "backup:backup",
    "restore": "backup:restore",
    "queue": "workflow:queue",
    "pause": "workflow:pause",
    "resume": "workflow:resume",
    "hold": "workflow:hold",
    "release": "workflow:release",
    "restart": "workflow:restart",
    "edit": "workflow:edit",
    "schedule": "schedules:schedule",
    "dashboard": "serve:dashboard",
    "metrics": "serve:metrics",
}
"""Command name -> ``module:attribute`` under ``queuectl.cli``, loaded on first use."""


CREATES_HOME: Final = frozenset(
    {
        "add",
        "enqueue",
        "worker start",
        "config set",
        "config import",
        "queue add",
        "schedule add",
        "restore",
    }
)
"""Commands that put something in the home, and so may create it. Every other command
needs an existing home: a mistyped ``--home`` is an error, not a new empty home. (An empty
folder, such as a fresh container volume, counts as a home and is set up by any command.)
``config reset`` is not one: putting a home that does not exist back to its defaults means
the ``--home`` was mistyped. ``backup`` only reads."""


class Context:
    """Carries the chosen home to every command; the store is built only when needed."""

    def __init__(self, home_option: str | None) -> None:
        self.home_option = home_option
        self.command = ""
        """The command that opened the store (for error messages: ``cannot worker start``)."""
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from queuectl.storage.home import Home, check_existing_home, resolve_home
            from queuectl.storage.store import Store

            root = resolve_home(self.home_option)
            self.command = _command_path()
            if self.command not in CREATES_HOME:
                check_existing_home(root)
            self._store = Store(Home(root).ensure())
        return self._store


def _command_path() -> str:
    """The running command below ``queuectl`` (``worker start``)."""
    ctx = click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


pass_context = click.make_pass_decorator(Context)


def complete_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of job ids: file names in the home's state folders (no JSON read)."""
    from queuectl.storage.home import STATE_DIRS, resolve_home

    root = resolve_home(ctx.find_root().params.get("home"))
    found: list[str] = []
    for state in STATE_DIRS:
        try:
            names = os.listdir(root / state)
        except OSError:
            continue
        found += [n[:-5] for n in names if n.endswith(".json") and n.startswith(incomplete)]
        if len(found) > 500:
            break
    return sorted(found)[:500]


def complete_config_keys(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[str]:
    from queuectl.config import KEYS

    return [key for key in KEYS if key.startswith(incomplete)]


class QueueGroup(click.Group):
    """Loads a command's module only when that command runs, and turns domain errors into one
    line on stderr and the error's exit code, for every subcommand (nested groups run inside
    this ``invoke``), under CliRunner too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's first sentence, whole (wrapped, never cut off with "...")."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=200)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(f"queuectl.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            usage_error(exc)
        except QueueError as exc:
            fail(str(exc), exc.exit_code)
        except OSError as exc:
            if os.environ.get("QUEUECTL_DEBUG") or isinstance(exc, BrokenPipeError):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            obj = ctx.obj if isinstance(ctx.obj, Context) else None
            doing = (obj.command if obj else "") or ctx.invoked_subcommand or "run"
            fail(f"cannot {doing}: {exc.strerror or exc}{where}", 1)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:  # a bug: one line, and the traceback on request
            if os.environ.get("QUEUECTL_DEBUG"):
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(run again with QUEUECTL_DEBUG=1 to see where)",
                1,
            )


@click.group(cls=QueueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    metavar="PATH",
    envvar="QUEUECTL_HOME",
    show_envvar=True,
    help="Queue home folder (default: ~/.queuectl).",
)
@click.version_option(__version__, prog_name="queuectl")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """A durable background job queue for shell commands.

    Jobs are JSON files under the queue home, moved between pending/, processing/,
    completed/, failed/, dead/ and cancelled/ (blocked/ while they wait for dependencies,
    held/ while held); every change is recorded in an fsynced journal.
    """
    ctx.obj = Context(home)


def duration_option(text: str) -> float:
    from queuectl.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"invalid duration {text!r}: {exc}") from None


def usage_error(exc: click.UsageError) -> NoReturn:
    """Click's usage errors as one line, like every other error (exit 2)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `queuectl` or `queuectl worker`
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    command = exc.ctx.command_path if exc.ctx else "queuectl"
    message = exc.format_message()
    if isinstance(exc, click.NoSuchOption):
        message = f"no such option: {exc.option_name}"
        if exc.possibilities:
            message += f" (did you mean {', '.join(sorted(exc.possibilities))}?)"
    fail(f"{message} (see '{command} --help')", exc.exit_code)


def main() -> None:
    """Entry point for the ``queuectl`` script and ``python -m queuectl``."""
    global ORIGINAL_UMASK
    ORIGINAL_UMASK = os.umask(0o077)  # queue files are private; jobs get the user's umask
    try:
        code = cli.main(prog_name="queuectl", standalone_mode=False)
    except click.UsageError as exc:
        usage_error(exc)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        fail("aborted", 1)
    except BrokenPipeError:  # e.g. `queuectl list | head`: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
