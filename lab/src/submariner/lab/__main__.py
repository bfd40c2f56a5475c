"""`python -m submariner.lab` is `sublab`."""

from submariner.lab.cli import main

main()
