"""Adjoints of the normalization operators."""
