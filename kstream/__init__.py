"""kstream: integrations and data pipelines as topologies of small nodes connected by Kafka topics.

Importing kstream does nothing but define names: no environment reads, no logging setup,
no connections.
"""

from kstream.batch import Page
from kstream.context import Context, Emit
from kstream.errors import KstreamError, Permanent, RateLimited
from kstream.retry import Retry
from kstream.topology import Topology
from kstream.workflows.declare import StepResult, Workflow

__all__ = ["Context", "Emit", "KstreamError", "Page", "Permanent", "RateLimited", "Retry", "StepResult", "Topology", "Workflow"]
