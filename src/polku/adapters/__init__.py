"""Implementations of the ports in ``polku.ports``."""
