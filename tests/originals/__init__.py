"""Plain re-implementations of the original scripts' algorithms, the oracles of tests/test_compat.py.

Written from the published algorithms (not copied), keeping each original's structure and
quirks: per-step Python loops, column vectors where the original uses them, no numerical
shortcuts. They are deliberately slow and obvious.
"""
