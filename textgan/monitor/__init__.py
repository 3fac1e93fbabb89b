"""`textgan monitor`: what each run is doing, read from its run directory and joined with Slurm.

tail (the last lines of a file, without reading it all), run_state (one run dir -> the row's file part),
slurm_jobs (one squeue + one sacct call for every run's jobs), job_state (which job a run is and its state,
Slurm's or this machine's for --local runs), usage (GPU / CPU core-hours and cost over all attempts), health
(the rules and their evidence), rows (all of it joined), table / detail (text), html_page and its parts
(curves, svg_chart, latest_grid, html_cells, html_run_section), cli (the command). Standard library only
(rich for --watch): the monitor starts instantly on a login node.
"""
