"""The retrieval wing (pure torch): ranks, top-k, split metrics, approximate indexes, reports."""
