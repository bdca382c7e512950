"""``fusionctl`` entry point: one click group, commands in small modules."""

from __future__ import annotations

import click

from controlplane import __version__
from controlplane.cli.db import db
from controlplane.cli.demo import demo
from controlplane.cli.models import models
from controlplane.cli.plan import plan_command
from controlplane.cli.policy import policy
from controlplane.cli.serve import serve
from controlplane.cli.signals import signals
from controlplane.cli.sim import sim
from controlplane.cli.swap import swap
from controlplane.cli.tasks import COMMANDS as TASK_COMMANDS
from controlplane.cli.tokens import tokens
from controlplane.cli.webhooks import webhooks
from controlplane.cli.worker import worker

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fusionctl")
def cli() -> None:
    """FusionPlane: place and run GPU face-swap jobs across private and cloud capacity.

    Exit codes: 0 done, 2 usage error, 65 bad input, 69 model error,
    70 internal error, 75 preempted (resumable).
    """


cli.add_command(swap)
cli.add_command(models)
cli.add_command(worker)
cli.add_command(demo)
cli.add_command(tokens)
cli.add_command(db)
cli.add_command(serve)
cli.add_command(plan_command)
cli.add_command(policy)
cli.add_command(signals)
cli.add_command(sim)
cli.add_command(webhooks)
for _command in TASK_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="fusionctl")


if __name__ == "__main__":  # `python -m controlplane.cli.main ...`, as the console script does
    main()
