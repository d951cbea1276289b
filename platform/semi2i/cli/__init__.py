"""The command-line entry points, one module per job: ``python jobs/<job>.py`` and the ``semi2i-<job>``
console scripts (pyproject.toml) both call its ``main(argv)``, so a plain ``pip install`` has the commands
without a checkout."""
