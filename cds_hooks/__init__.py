"""Baclofen CDS: a CDS Hooks service that checks baclofen orders."""

__version__ = "0.1.0"
