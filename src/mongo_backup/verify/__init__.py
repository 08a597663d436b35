"""The verify core (``run.run_verify``): is a backup intact, and does it match a live
database?

May import: ``archive``, ``mongo``, ``location`` and the ground modules; never
``backup``, ``restore`` or ``cli``.
"""
