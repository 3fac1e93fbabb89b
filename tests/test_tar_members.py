"""textgan.data.loading.tar_members: the loader's tar reader gives what tarfile gives, and stops where it stops."""

import io
import os
import tarfile

import pytest
import webdataset as wds

from textgan.data.loading.tar_members import TarFormatError, group_samples, iter_tar_files


def tarfile_files(path) -> list:
    """(name, bytes) of each regular file, read by Python's tarfile: the reference."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def ours(path) -> list:
    with open(path, "rb") as f:
        return list(iter_tar_files(f))


def write_with_tarfile(path, files, fmt):
    with tarfile.open(path, "w", format=fmt) as tar:
        info = tarfile.TarInfo("adir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


FILES = [
    ("000000000001.jpg", os.urandom(1000)),
    ("000000000001.json", b'{"caption": "x"}'),
    ("000000000001.txt", "ünïcode caption".encode()),
    ("000000000002.jpg", b""),  # an empty file
    ("000000000002.json", b"{}"),
    # a 159-character path: ustar's prefix field, a pax header or a GNU long name, by format
    ("p" * 90 + "/" + "q" * 50 + "/000000000003.jpg", os.urandom(512)),
    ("d/ñame-ünïcode.Json", os.urandom(77)),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["pax", "gnu", "ustar"])
def test_reads_what_tarfile_reads(tmp_path, fmt):
    path = tmp_path / "x.tar"
    files = [f for f in FILES if fmt != tarfile.USTAR_FORMAT or f[0].isascii()]  # ustar: no unicode names
    write_with_tarfile(path, files, fmt)
    assert ours(path) == tarfile_files(path) == files


def test_groups_webdataset_samples_as_webdataset_does(tmp_path):
    path = tmp_path / "w.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(5):
            sink.write({"__key__": f"{i:09d}", "jpg": os.urandom(300 + i), "txt": f"caption {i}", "json": b"{}"})
    expected = [{k: v for k, v in s.items() if k in ("__key__", "jpg", "txt", "json")}
                for s in wds.WebDataset(str(path), shardshuffle=False)]
    got = group_samples(ours(path))
    assert len(got) == 5
    assert got == expected
    assert group_samples(ours(tmp_path / "w.tar"))[1]["txt"] == b"caption 1"
    # the extension is lower-cased and a file without one is not part of any sample
    assert group_samples([("k.JPG", b"1"), ("k.Json", b"2"), ("README", b"3")]) == [{"__key__": "k", "jpg": b"1",
                                                                                      "json": b"2"}]


def test_a_cut_tar_gives_the_files_before_the_cut_then_an_error(tmp_path):
    path = tmp_path / "x.tar"
    write_with_tarfile(path, FILES, tarfile.PAX_FORMAT)
    whole = path.read_bytes()
    reference = tarfile_files(path)
    with tarfile.open(path) as tar:
        data_ends = [m.offset_data + m.size for m in tar if m.isfile()]
    for cut in range(100, len(whole) - 1024, 97):  # every kind of place: in headers, in data, in padding
        (tmp_path / "cut.tar").write_bytes(whole[:cut])
        got = []
        with open(tmp_path / "cut.tar", "rb") as f:
            try:
                for item in iter_tar_files(f):
                    got.append(item)
            except TarFormatError:
                pass
        # exactly the files whose data lies wholly before the cut, in order
        assert got == [f for f, end in zip(reference, data_ends) if end <= cut], cut


# directory header, first file's header + its 1000 bytes padded to 1024
SECOND_HEADER = 512 + 512 + 1024


def _read_with_second_header_damaged(tmp_path, damage, error: str) -> list:
    """FILES[:3] written by tarfile, damage(data) applied, then read by ours until the TarFormatError matching
    `error`; returns the files read before it."""
    path = tmp_path / "x.tar"
    write_with_tarfile(path, FILES[:3], tarfile.GNU_FORMAT)
    data = bytearray(path.read_bytes())
    damage(data)
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    got = []
    with pytest.raises(TarFormatError, match=error):
        with open(tmp_path / "bad.tar", "rb") as f:
            for item in iter_tar_files(f):
                got.append(item)
    return got


def test_a_corrupt_header_stops_with_an_error_after_the_files_before_it(tmp_path):
    def flip_a_name_byte(data):  # a byte of the second file's name: the checksum no longer matches
        data[SECOND_HEADER + 10] ^= 0xFF

    assert _read_with_second_header_damaged(tmp_path, flip_a_name_byte, "checksum") == FILES[:1]
    assert tarfile_files(tmp_path / "bad.tar") == FILES[:1]  # tarfile stops there too, but without a word


def _rewrite_header(data: bytearray, at: int, signed: bool = False, **fields) -> None:
    """Set header fields (name: (offset, bytes)) of the header at `at`, then store its checksum as the unsigned
    byte sum (or the signed one some old writers stored)."""
    for start, value in fields.values():
        data[at + start:at + start + len(value)] = value
    data[at + 148:at + 156] = b" " * 8
    header = bytes(data[at:at + 512])
    total = sum(header) - (256 * sum(1 for b in header if b >= 128) if signed else 0)
    data[at + 148:at + 156] = b"%06o\0 " % total


def test_a_header_checksummed_over_signed_bytes_is_read_as_tarfile_reads_it(tmp_path):
    path = tmp_path / "x.tar"
    files = [("ñame-ünïcode.jpg", b"1234"), ("b.json", b"{}")]
    write_with_tarfile(path, files, tarfile.GNU_FORMAT)
    data = bytearray(path.read_bytes())
    _rewrite_header(data, 512, signed=True)  # the file's header (after the directory's): its name has bytes >= 128
    (tmp_path / "signed.tar").write_bytes(bytes(data))
    assert ours(tmp_path / "signed.tar") == tarfile_files(tmp_path / "signed.tar") == files


def test_a_header_with_a_right_checksum_and_a_garbled_size_is_damage_not_a_crash(tmp_path):
    def garble_the_size(data):
        _rewrite_header(data, SECOND_HEADER, size=(124, b"zz\0"))

    assert _read_with_second_header_damaged(tmp_path, garble_the_size, "bad header") == FILES[:1]


# ---------------------------------------------------------------------- the builder's writer


def test_written_tars_read_the_same_with_tarfile_gnu_tar_webdataset_and_ours(tmp_path):
    import subprocess

    from textgan.data.building.tar_write import END_OF_ARCHIVE, member_bytes, sample_bytes

    samples = [{"__key__": f"{i:012d}", "jpg": os.urandom(700 * i), "json": b"{}", "txt": f"caption {i}".encode()}
               for i in range(4)]  # sample 0: an empty jpg
    path = tmp_path / "ours.tar"
    path.write_bytes(b"".join(sample_bytes(s, 1577836800) for s in samples) + END_OF_ARCHIVE)
    expected = [(f"{s['__key__']}.{ext}", s[ext]) for s in samples for ext in ("jpg", "json", "txt")]
    assert tarfile_files(path) == ours(path) == expected
    with tarfile.open(path) as tar:
        assert {(m.mtime, m.mode, m.uid, m.gid, m.type) for m in tar} == {(1577836800, 0o644, 0, 0, tarfile.REGTYPE)}
    listing = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert listing == [name for name, _ in expected]  # GNU tar reads it without a warning
    assert [{k: v for k, v in s.items() if not k.startswith("__") or k == "__key__"}
            for s in wds.WebDataset(str(path), shardshuffle=False)] == samples
    assert sample_bytes(samples[2], 1577836800) == sample_bytes(dict(samples[2]), 1577836800)  # bytes are a function
    with pytest.raises(ValueError, match="at most 100 bytes"):
        member_bytes("x" * 101, b"", 0)
    with pytest.raises(ValueError, match="must be ASCII"):
        member_bytes("ñ.jpg", b"", 0)
