"""Workflows on Kafka alone: steps as kstream nodes, an exactly-once orchestrator per workflow
type whose state lives in a compacted topic (:mod:`kstream.workflows.declare` to declare,
:mod:`kstream.workflows.decide` for the rules)."""
