"""Routes, one module per concern; each handler calls one service method and nothing else."""
