"""Data, in rooms that follow the flow:

    sources/   COCO 2014 captions and the built-in captioned-shapes generator -> Records
    building/  Records -> square JPEGs -> WebDataset shards + manifest (`textgan shards`)
    loading/   shards -> batches for training and evaluation (streaming, resumable)

Shared by the rooms, here: the shard format (format.py), the manifest (manifest.py), what a source hands
the builder (records.py), decoding a stored sample (decode.py) and precomputed features (features.py).
Sources know nothing of building or loading; building and loading know nothing of each other
(tests/test_import_rooms.py).
"""
