"""Tools for developing kstream apps on this machine: a local Kafka broker."""
