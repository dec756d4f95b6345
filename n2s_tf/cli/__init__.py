"""absl entry points; train.py and test_single.py at the top level are thin wrappers."""
