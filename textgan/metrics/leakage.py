"""Leakage check: are reference images also in the training shards?

The classic case: img2dataset's COCO recipe trains on train2017, which holds most of val2014, so a
val2014 FID on such a model scores it on its own training images. Two signals, both read from the
shards themselves (the manifest lists tars, not images):
- ids: the same image id on both sides. Meaningful when both sides come from the same id space
  (COCO ids are global across 2014/2017 splits; captioned-shapes val ids are offset from train's);
  compared only when both manifests name the same `source`.
- bytes: the same stored JPEG (sha256). The builder's encoding is deterministic, so the same source
  image prepared with the same settings gives the same bytes, whatever id it carries.
The reference manifest's own build-time `overlap` record (textgan.data.building.overlap) is reported alongside.
"""

from textgan.errors import UsageError

SHOWN = 10  # ids listed in messages


class LeakageError(UsageError):
    """Reference images overlap the training shards and metrics.allow_overlap is off."""


def find_leakage(reference, train) -> dict:
    """{"checked", "train_shards", "ids", "bytes", "n_ids", "n_bytes", "reference_build_overlap"}:
    reference image ids seen in `train` (ShardIndex objects) by id and by JPEG bytes."""
    same_source = reference.manifest.get("source") == train.manifest.get("source")
    train_ids = set(train.ids) if same_source else set()
    train_bytes = set(train.jpg_sha256)
    by_id = sorted({i for i in reference.ids if i in train_ids})
    by_bytes = sorted({i for i, h in zip(reference.ids, reference.jpg_sha256) if h in train_bytes})
    return {"checked": True, "train_shards": train.shards_dir, "ids_compared": same_source,
            "n_ids": len(by_id), "n_bytes": len(by_bytes), "ids": by_id[:SHOWN], "bytes": by_bytes[:SHOWN],
            "reference_build_overlap": reference.manifest.get("overlap")}


def describe(leak: dict, reference_dir: str) -> str:
    return (f"LEAKAGE: {leak['n_ids']} reference image ids (e.g. {leak['ids']}) and {leak['n_bytes']} reference "
            f"JPEGs byte-identical to training images (e.g. ids {leak['bytes']}): the reference {reference_dir} "
            f"overlaps the training shards {leak['train_shards']}, so a metric against it scores the model on "
            "its own training images.")


def enforce(leak: dict, reference_dir: str, allow_overlap: bool, log=print) -> None:
    """Report an overlap loudly; raise LeakageError unless allowed."""
    if not (leak["n_ids"] or leak["n_bytes"]):
        return
    message = describe(leak, reference_dir)
    if not allow_overlap:
        raise LeakageError(message + " Rebuild the training shards without the reference images (shards build "
                                     "--exclude-overlap), use a clean reference, or set metrics.allow_overlap=true "
                                     "(textgan eval --allow-overlap) to measure anyway; the overlap is then recorded "
                                     "in every result.")
    log(f"WARNING: {message} Measuring anyway (allow_overlap); every result records the overlap.")
