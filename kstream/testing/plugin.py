"""The pytest plugin of kstream (registered as the ``pytest11`` entry point ``kstream``).

``kstream_driver`` builds :class:`~kstream.testing.driver.TopologyDriver` instances and closes
them after the test::

    def test_orders(kstream_driver):
        driver = kstream_driver(topology)
        driver.send("shop.orders.raw", {...})
        driver.run()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kstream.config import Settings
from kstream.testing.driver import TopologyDriver
from kstream.topology import Topology

DriverFactory = Callable[..., TopologyDriver]


@pytest.fixture()
def kstream_driver() -> Iterator[DriverFactory]:
    """A factory: ``kstream_driver(topology, settings=None)`` -> a :class:`TopologyDriver`."""
    made: list[TopologyDriver] = []

    def make(topology: Topology, settings: Settings | None = None) -> TopologyDriver:
        driver = TopologyDriver(topology, settings)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()
