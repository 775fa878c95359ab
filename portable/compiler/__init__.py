"""The compiler: graph rewrites, fusion into kernels, lowering to scheduled TIR, build."""
