"""``kstream graph``."""

from __future__ import annotations

import click

from kstream.cli.common import Options, app_argument, pass_options, topology_of
from kstream.graph import render


@click.command()
@app_argument
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True)
@pass_options
def graph(options: Options, app: str, fmt: str) -> None:
    """Print the topology APP as a Mermaid flowchart (or Graphviz DOT)."""
    topology = topology_of(app)
    click.echo(render(topology, options.settings().namespace, "dot" if fmt == "dot" else "mermaid"))
