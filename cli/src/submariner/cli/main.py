"""The `subctl` root command: global kube flags, the verbs, pflag-style booleans, exit codes (subctl.md §1)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from submariner.cli import (
    VERSION,
    benchmark,
    deploy_broker,
    diagnose,
    export,
    gather,
    join,
    recover,
    show,
    uninstall,
    verify,
)
from submariner.cli.options import add_kube_options, kube_flags_from, parse_bool


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.option("--version", "show_version", is_flag=True, help="print the subctl version")
@add_kube_options
def cli(show_version: bool, **kw: Any) -> None:
    """An installer for Submariner"""
    ctx = click.get_current_context()
    if show_version:
        click.echo(f"subctl version {VERSION}")
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)
    ctx.obj = kube_flags_from(kw)


@cli.command("version")
def version_command() -> None:
    """Print the version information"""
    click.echo(f"subctl version: {VERSION}")


@cli.command("help")
@click.argument("path", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, path: tuple[str, ...]) -> None:
    """Help about any command"""
    command: click.Command = cli
    parent = ctx.parent or ctx
    for name in path:
        if not isinstance(command, click.Group) or name not in command.commands:
            raise click.UsageError(f'unknown help topic "{" ".join(path)}"')
        command = command.commands[name]
        parent = click.Context(command, info_name=name, parent=parent)
    click.echo(command.get_help(parent))


cli.add_command(deploy_broker.command)
cli.add_command(join.command)
cli.add_command(export.export_group)
cli.add_command(export.unexport_group)
cli.add_command(show.show_group)
cli.add_command(uninstall.command)
cli.add_command(diagnose.diagnose_group)
cli.add_command(recover.command)
cli.add_command(verify.command)
cli.add_command(benchmark.benchmark_group)
cli.add_command(gather.command)


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell: str) -> None:
    """Generate the autocompletion script for the specified shell"""
    from click.shell_completion import get_completion_class

    prog = os.path.basename(sys.argv[0]) or "subctl"
    complete_var = f"_{prog.replace('-', '_').upper()}_COMPLETE"
    completion_class = get_completion_class(shell)
    assert completion_class is not None
    click.echo(completion_class(cli, {}, prog, complete_var).source())


def bool_flags(command: click.Command, out: set[str] | None = None) -> set[str]:
    """Every `--x/--no-x` flag in the tree: those accept pflag's `--x=true|false` form."""
    out = set() if out is None else out
    for param in command.params:
        if isinstance(param, click.Option) and param.is_bool_flag and param.secondary_opts:
            out.update(o for o in param.opts if o.startswith("--"))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            bool_flags(sub, out)
    return out


def rewrite_bools(argv: Sequence[str], flags: set[str]) -> list[str]:
    """`--globalnet=false` → `--no-globalnet`, `--globalnet=true` → `--globalnet` (Go pflag booleans)."""
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and name in flags:
            try:
                out.append(name if parse_bool(value, name) else "--no-" + name[2:])
            except click.BadParameter:
                raise click.UsageError(f'invalid argument "{value}" for "{name}" flag: strconv.ParseBool: parsing '
                                       f'"{value}": invalid syntax') from None
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) or "subctl"
    try:
        args = rewrite_bools(args, bool_flags(cli))
        cli.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    except click.exceptions.Abort:
        raise SystemExit(1) from None
    except click.UsageError as e:
        message = e.format_message()
        if "Got unexpected extra argument" in message:
            message = "this command doesn't support any arguments"
        click.echo(f"Error: {message}", err=True)
        if e.ctx is not None:
            click.echo(e.ctx.get_usage(), err=True)
        click.echo(f"\n{message}", err=True)
        raise SystemExit(1) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
