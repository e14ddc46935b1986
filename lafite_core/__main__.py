"""`python -m lafite_core <command>`: the same as the `lafite` command (lafite_core/cli.py)."""

from lafite_core.cli import main

main()
