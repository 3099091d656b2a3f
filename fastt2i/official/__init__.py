"""Literal transcriptions of the official models (plain PyTorch, official structure and math): the ground truth of the parity tests and the eager baselines of the benchmarks."""
