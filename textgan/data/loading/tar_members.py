"""Reading a shard's files in order, fast: the loader's tar reader.

Written here rather than taken from tarfile/webdataset because of cost, measured: their header parsing
(tarfile.TarInfo.frombuf in pure Python, plus webdataset's per-file generators) took ~0.45 ms per sample
of three files in a loader worker, more than decoding a 64 px JPEG, and it is most of why two loader
workers delivered half the samples/s of one plain PIL process (BENCHMARKS.md "loader"). A shard is a
plain sequence of 512-byte headers and data, written by textgan's builder, webdataset's TarWriter or
img2dataset (both Python's tarfile); this reads exactly what those write: ustar and GNU headers, pax
extended headers ('x': path and size; 'g' ignored) and GNU long names ('L'). Each header's checksum is
checked, so a corrupt or cut tar stops with an error after the files before it, as tarfile does.
tests/test_tar_members.py compares it with tarfile on tars written by each of them, cut and corrupted.
"""

from __future__ import annotations

import io

import numpy as np

BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")  # regular file, old-style regular file, contiguous file
_ZERO_BLOCK = bytes(BLOCK)


class TarFormatError(ValueError):
    """The bytes stop being a tar (bad checksum, a cut inside a header or a file's data)."""


def _field(header: bytes, start: int, length: int) -> bytes:
    return header[start:start + length].split(b"\0", 1)[0]


def _number(raw: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte with its top bit set)."""
    if raw and raw[0] & 0x80:
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _checksums_ok(headers: list) -> np.ndarray:
    """Whether each 512-byte header's stored checksum matches it: the byte sum with the checksum's own 8 bytes
    counted as spaces (some old writers summed signed bytes). All headers at once: a Python sum over one
    header's bytes took ~3.5 us, half of what reading a shard cost per file."""
    blocks = np.frombuffer(b"".join(headers), dtype=np.uint8).reshape(len(headers), BLOCK)
    field = blocks[:, 148:156]
    unsigned = blocks.sum(axis=1, dtype=np.uint32).astype(np.int64) - field.sum(axis=1, dtype=np.uint32) + 8 * 32
    stored = np.array([_stored_checksum(h) for h in headers], dtype=np.int64)
    ok = stored == unsigned
    for i in np.flatnonzero(~ok):  # rare: try the signed sum
        high = np.count_nonzero(blocks[i] >= 128) - np.count_nonzero(field[i] >= 128)
        ok[i] = stored[i] == unsigned[i] - 256 * high
    return ok


def _stored_checksum(header: bytes) -> int:
    try:
        return _number(header[148:156])
    except ValueError:
        return -1  # not a number: matches no sum


def _pax_records(data: bytes) -> dict:
    """'LENGTH KEY=VALUE\\n' records of a pax extended header."""
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _read_exactly(f: io.BufferedReader, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TarFormatError(f"unexpected end of data in {what} ({len(data)} of {n} bytes)")
    return data


def iter_tar_files(f: io.BufferedReader):
    """(name, bytes) of each regular file of an open tar, in order. Raises TarFormatError at damage,
    after yielding every file before it; ends quietly at the end-of-archive zero block or the file's end.

    The whole tar is read before the first file is yielded, so that all header checksums are checked
    in one go (_checksums_ok); a file is yielded only when its header and every header before it pass."""
    headers, files, error = [], [], None
    try:
        for name, data in _members(f, headers):
            files.append((len(headers), name, data))
    except (TarFormatError, ValueError, IndexError, UnicodeDecodeError) as exn:  # damage, or garbage in a header
        error = exn if isinstance(exn, TarFormatError) else TarFormatError(f"bad header: {exn!r}")
    good = len(headers)
    if headers:
        ok = _checksums_ok(headers)
        if not ok.all():
            good = int(np.argmin(ok))  # the first header that fails: nothing from it on is trusted
            error = TarFormatError("bad header checksum: the tar is corrupt here")
    for count, name, data in files:
        if count > good:
            break
        yield name, data
    if error is not None:
        raise error


def _members(f: io.BufferedReader, headers: list):
    """(name, bytes) of each regular file, headers unchecked: every header read is appended to `headers`
    first, so a file's header is headers[k - 1] when k headers were read by the time it is yielded."""
    long_name, pax = None, {}
    while True:
        header = f.read(BLOCK)
        if not header:
            return  # no end-of-archive block: tolerated, as tarfile does
        if len(header) != BLOCK:
            raise TarFormatError(f"unexpected end of data in a header ({len(header)} of {BLOCK} bytes)")
        if header == _ZERO_BLOCK:
            return
        headers.append(header)
        size = _number(header[124:136])
        kind = header[156:157]
        if kind in (b"x", b"L", b"g", b"K"):  # metadata for the next header (or global, ignored)
            data = _read_exactly(f, size, "a pax/GNU extended header")
            f.seek(-size % BLOCK, io.SEEK_CUR)
            if kind == b"x":
                pax = _pax_records(data)
            elif kind == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        size = int(pax.get("size", size))
        if "path" in pax:
            name = pax["path"]
        elif long_name is not None:
            name = long_name
        else:
            name = _field(header, 0, 100).decode("utf-8", "surrogateescape")
            prefix = _field(header, 345, 155) if header[257:262] == b"ustar" else b""
            if prefix:
                name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        long_name, pax = None, {}
        if kind in _REGULAR:
            data = _read_exactly(f, size, name)
            f.seek(-size % BLOCK, io.SEEK_CUR)
            yield name, data
        else:  # directories, links, devices: nothing a sample is made of
            f.seek(size + (-size % BLOCK), io.SEEK_CUR)


def group_samples(files) -> list:
    """WebDataset samples from (name, bytes) in order: consecutive files with the same key (the path up to
    the first dot of the base name) form a sample {"__key__": key, extension (lower case): bytes}."""
    samples = []
    for name, data in files:
        slash = name.rfind("/") + 1
        dot = name.find(".", slash)
        if dot < 0:
            continue  # no extension: no place in a sample (webdataset drops these too)
        key, ext = name[:dot], name[dot + 1:].lower()
        if not samples or samples[-1]["__key__"] != key:
            samples.append({"__key__": key})
        samples[-1][ext] = data
    return samples
