"""The ``kstream`` command line (click), one module per command group."""
