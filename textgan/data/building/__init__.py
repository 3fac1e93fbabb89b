"""The shard builder: records -> images -> WebDataset shards + manifest (`textgan shards`)."""
