"""Test your topologies without a broker: :class:`TopologyDriver` and the ``kstream_driver`` fixture.

The pytest fixture comes with the package (a ``pytest11`` entry point, :mod:`kstream.testing.plugin`).
"""

from kstream.testing.driver import Output, TopologyDriver

__all__ = ["Output", "TopologyDriver"]
