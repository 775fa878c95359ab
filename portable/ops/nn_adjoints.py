"""Adjoints of the nn operators."""
