"""The ``poa-gateway`` command line: the entry point, the top-level parser and
``decode`` (main); one module per group of subcommands: ``run``, ``status`` and
``explain`` (daemon), ``config``, ``guids``, ``inventory``, ``quarantine``, ``report``,
``simulate``; and what they share (support)."""
