"""``python -m orchestrator`` is the ``stockade`` command."""

from orchestrator.cli import main

main()
