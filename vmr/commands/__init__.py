"""CLI subcommands, one module each (see :mod:`vmr.cli`)."""
