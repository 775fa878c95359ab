"""Adjoints of the movement operators."""
