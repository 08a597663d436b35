"""The command line: one module per command; each parses, calls a core, reports."""
