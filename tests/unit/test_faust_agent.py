"""agent_node: a Faust agent's function as a node handler (run here with the test driver)."""

from __future__ import annotations

import pytest

from examples import faust_agent
from kstream import Topology
from kstream.errors import DeclarationError
from kstream.faust_agent import agent_node
from kstream.testing import TopologyDriver


def test_the_agent_gets_records_of_its_topic_type_and_its_yields_are_outputs() -> None:
    with TopologyDriver(faust_agent.make_topology("raw", "points")) as driver:
        driver.send("raw", {"order": 1, "customer": "ann", "total": 3.9})
        driver.send("raw", {"order": 2, "total": 1})
        driver.run()
        assert [(o.key, o.json()) for o in driver.outputs("points")] == [
            (b"ann", {"customer": "ann", "order": "1", "points": 3})]
        [entry] = driver.trash()
    assert (entry.error_type, len(entry.attempts)) == ("UnknownCustomer", 3)


def test_only_faust_agents_are_accepted() -> None:
    async def not_an_agent(stream):  # type: ignore[no-untyped-def]
        yield stream

    with pytest.raises(DeclarationError, match="is not a Faust agent"):
        agent_node(Topology("t"), "n", not_an_agent, source="in")
