"""Side-by-side benchmarks: tformer against the libraries users would pick instead.

Run `python -m benchmarks --help`. Every case times ours and the peers in the same process,
interleaved, and reports ratios; nothing here asserts a speed.
"""
