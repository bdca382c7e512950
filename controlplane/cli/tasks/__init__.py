"""``fusionctl submit``, ``fusionctl tasks ...`` and ``fusionctl explain``: the REST API from a shell.

Every command talks to the API through :class:`ApiClient` (``--url``/``--token``
or ``FUSIONPLANE_URL``/``FUSIONPLANE_TOKEN``). API errors print one line and
exit 1, an unreachable API exits 3, usage errors exit 2. ``--output json``
prints the API's own JSON (docs/cli.md documents it), sorted and indented.

The commands live one module each: :mod:`.submit`, :mod:`.listing` (the
``tasks`` group: list, show, cancel, logs), :mod:`.output` (``tasks output``: download), :mod:`.follow` (``tasks watch``
and ``submit --wait``), :mod:`.explain`; :mod:`.render` holds the plain-text
tables and :mod:`.session` the API client and task URLs they share.
"""

from __future__ import annotations

import click

from controlplane.cli.tasks.explain import explain
from controlplane.cli.tasks.follow import watch
from controlplane.cli.tasks.listing import tasks
from controlplane.cli.tasks.output import output
from controlplane.cli.tasks.submit import submit

__all__ = ["COMMANDS", "explain", "submit", "tasks"]

tasks.add_command(watch)
tasks.add_command(output)

COMMANDS: list[click.Command] = [submit, tasks, explain]
