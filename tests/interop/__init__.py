"""Interoperability tests against authorization servers we did not write."""
