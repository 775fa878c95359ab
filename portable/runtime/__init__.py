"""Runtime: the compiled Executable, its saving and loading, input checking."""

from .executable import Executable, load

__all__ = ["Executable", "load"]
