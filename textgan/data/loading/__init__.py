"""The streaming training/eval loader over a shard directory."""
