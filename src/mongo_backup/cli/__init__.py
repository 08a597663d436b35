"""The command line: argument parsing and reporting only.

One module per command (``cmd_backup``, ``cmd_restore``, ``cmd_verify``, ``cmd_inspect``,
``cmd_list`` for list and prune, ``cmd_demo``): ``add_parser`` builds its options,
``run(args)`` turns them into a core's options, calls the core and prints its result.
``main`` runs one command; ``exits`` is the one place that chooses exit codes; ``config``
resolves the connection (flags, environment, ``.env``) and credentials; ``logs``,
``progress`` and ``tables`` are how things are shown; ``demo`` is the Quick start's demo.

May import: everything below it (the cores, ``location``, ``archive``, ``mongo``,
``destinations``, the ground modules). Nothing imports ``cli``.
"""
