"""The applications wing: the library behind evaluate, search and export (no Trainer)."""
