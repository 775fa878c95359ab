"""x86 templates (AVX2 and AVX-512: the vector width comes from the target)."""

from . import conv, conv_nchwc, generic, matmul, rowreduce, training, transpose, winograd  # noqa: F401
