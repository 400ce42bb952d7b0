"""`python -m featmux.benchmarks.speed`: the same command as `featmux bench speed`."""

from featmux.benchmarks.speed.cli import main

main()
