"""The training loop and what it needs: phases, DeepSpeed engines, EMA, checkpoints, stats, schedules."""
