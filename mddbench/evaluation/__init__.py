"""The frozen evaluation protocol (fresh networks trained on a set, scored on the real test split) and its metrics."""
