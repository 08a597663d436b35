"""The package version, apart so that the manifest builder and the CLI can name it
without importing the package's public face (and everything behind it)."""

__version__ = "0.1.0"
