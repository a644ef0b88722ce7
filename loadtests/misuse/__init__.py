"""A labelled misuse scenario and the benchmark of the detection engine's precision and recall.

python -m loadtests.misuse.bench      # writes loadtests/misuse/RESULTS.md
"""
