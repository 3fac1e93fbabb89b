"""Data: COCO 2014 and captioned-shapes sources, the shard builder, the streaming loader."""
