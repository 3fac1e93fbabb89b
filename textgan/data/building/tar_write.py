"""Writing a shard's tar bytes: plain ustar members, byte-identical for equal input.

Written here rather than with webdataset's TarWriter (or tarfile under it) because of cost, measured in the
builder's main process: tarfile's header creation took ~0.2 ms per file, ~0.6 ms per sample of three files,
as much as a worker's decode + resize + encode of a 512 px JPEG to 64 px, so the single main process writing
every shard held two workers to 1.27x one (BENCHMARKS.md "shards"). It also pulled torch into the main
process through webdataset's import. Our members are the simplest tar there is: short ASCII names
(`{image id:012d}.{ext}`), regular files, one fixed mtime, no owner names; tarfile, GNU tar and webdataset
read them (tests/test_tar_members.py, tests/test_builder.py).
"""

from __future__ import annotations

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)  # two zero blocks end a tar
_MAX_SIZE = 8 ** 11 - 1  # what an 11-digit octal size field holds (8 GiB); no sample comes near it


def _octal(value: int, width: int) -> bytes:
    """A numeric header field: zero-padded octal digits and a NUL, `width` bytes in all."""
    return f"{value:0{width - 1}o}".encode("ascii") + b"\0"


def _header_template() -> bytes:
    """The header fields every member shares (mode, owner ids, type, ustar magic), the others zero."""
    header = bytearray(BLOCK)
    header[100:108] = _octal(0o644, 8)
    header[108:116] = _octal(0, 8)  # uid
    header[116:124] = _octal(0, 8)  # gid
    header[156:157] = b"0"  # regular file
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[329:337] = _octal(0, 8)  # devmajor
    header[337:345] = _octal(0, 8)  # devminor
    return bytes(header)


_TEMPLATE = _header_template()
# The checksum is the byte sum of the header with its own field counted as 8 spaces: the shared fields' part
# is summed once here, so that a member sums only its name, size and mtime (the 512-byte sum per member was
# a third of the header's cost, measured on 3 members per sample).
_TEMPLATE_SUM = sum(_TEMPLATE) + 8 * ord(" ")


def member_bytes(name: str, data: bytes, mtime: int) -> bytes:
    """One regular file as tar bytes: a ustar header, the data, zero padding to a whole block."""
    raw_name = name.encode("utf-8")
    if not name.isascii() or len(raw_name) > 100 or b"\0" in raw_name:
        raise ValueError(f"tar member name {name!r} must be ASCII of at most 100 bytes (the ustar name field)")
    if len(data) > _MAX_SIZE:
        raise ValueError(f"tar member {name!r} is {len(data)} bytes; at most {_MAX_SIZE} fit a ustar size field")
    size, stamp = _octal(len(data), 12), _octal(mtime, 12)
    header = bytearray(_TEMPLATE)
    header[0:len(raw_name)] = raw_name
    header[124:136] = size
    header[136:148] = stamp
    checksum = _TEMPLATE_SUM + sum(raw_name) + sum(size) + sum(stamp)
    header[148:156] = f"{checksum:06o}".encode("ascii") + b"\0 "
    return bytes(header) + data + bytes(-len(data) % BLOCK)


def sample_bytes(sample: dict, mtime: int) -> bytes:
    """A WebDataset sample {"__key__": key, extension: bytes, ...} as its members, extensions in sorted order
    (a fixed order keeps the tar's bytes a function of the sample alone)."""
    key = sample["__key__"]
    return b"".join(member_bytes(f"{key}.{ext}", sample[ext], mtime) for ext in sorted(sample) if ext != "__key__")
