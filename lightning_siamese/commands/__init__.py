"""The extra commands of ``lightning-siamese``: argument parsing, printing and exit codes only."""
