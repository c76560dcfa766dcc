"""Run the CLI as `python -m hookdeploy`."""

from hookdeploy.cli import main

main()
