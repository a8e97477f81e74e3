"""The workflows HTTP API (``kstream serve``): :mod:`kstream.api.server`."""
