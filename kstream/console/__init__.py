"""The operator console (``kstream console``, and ``/console`` of ``kstream serve --console``):
server-rendered pages over what the CLI reads. Built by :func:`kstream.console.app.create_console`."""
