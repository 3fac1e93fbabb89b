"""`textgan monitor`: what each run is doing, read from its run directory (and, later, joined with Slurm).

tail (the last lines of a file, without reading it all), run_state (one run dir -> one row), find_runs (which
directories are runs), cli (the command). Standard library only: the monitor starts instantly on a login node.
"""
