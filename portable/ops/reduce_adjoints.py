"""Adjoints of the reduce operators."""
