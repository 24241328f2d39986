"""Civic data-sharing hub."""

__version__ = "0.1.0"
