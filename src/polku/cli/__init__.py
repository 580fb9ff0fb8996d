"""The ``polku`` command line."""

from polku.cli.main import app, main

__all__ = ["app", "main"]
