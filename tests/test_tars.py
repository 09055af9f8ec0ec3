"""vlp.data.tars reads what the standard library's tarfile reads, and webdataset's samples come out alike."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import webdataset as wds

from vlp.data.tars import TarFormatError, TarShardSamples, tar_members


def archive(tar_format: int, members: list[tuple[str, bytes | str | None]], **kwargs) -> bytes:
    """A tar of ``(name, data)``: bytes a file, a str a symlink to it, None a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format, **kwargs) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000.25  # a float, as webdataset's TarWriter stores: a pax record
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    """What webdataset's tar_file_iterator takes from an archive: the regular files, via tarfile."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar if info.isreg()]


MEMBERS = [
    ("000001.jpg", b"\xff\xd8" + bytes(range(256)) * 7),
    ("000001.txt", b"a dog on a sofa"),
    ("000001.json", json.dumps({"status": "success"}).encode()),
    ("folder", None),
    ("folder/link.jpg", "000001.jpg"),
    ("empty.txt", b""),
    ("block.bin", bytes(512)),
    ("block-and-one.bin", b"x" * 513),
    ("caf\u00e9-\u5199\u771f.txt", "unicode names \u00e9".encode()),
    ("deep/" * 20 + "long.jpg", b"a name over 100 characters"),  # ustar prefix, GNU long name, pax path
    ("d/" + "n" * 120 + ".txt", b"a last part over 100 characters: pax path or GNU long name only"),
    ("__meta__", b"webdataset skips this one, tar_members yields it"),
]


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_equal_tarfiles_in_every_format(tar_format: int) -> None:
    members = MEMBERS if tar_format != tarfile.USTAR_FORMAT else MEMBERS[:-2] + MEMBERS[-1:]  # no room
    data = archive(tar_format, members)
    expected = tarfile_members(data)
    assert len(expected) == len([m for m in members if isinstance(m[1], bytes)])
    assert list(tar_members(io.BytesIO(data))) == expected


def test_global_pax_records_and_signed_checksums_are_read_as_tarfile_reads_them() -> None:
    data = archive(tarfile.PAX_FORMAT, MEMBERS[:3], pax_headers={"comment": "a global header"})
    assert data[156:157] == b"g"
    assert list(tar_members(io.BytesIO(data))) == tarfile_members(data)
    # Old tars summed the header as signed bytes: rewrite a header with high bytes (a UTF-8 name) that way.
    ustar = bytearray(archive(tarfile.USTAR_FORMAT, [("caf\u00e9.txt", b"signed")]))
    signed = 256 + sum(b - 256 if b >= 128 else b for b in ustar[:148] + ustar[156:512])
    ustar[148:156] = b"%06o\x00 " % signed
    assert list(tar_members(io.BytesIO(bytes(ustar)))) == tarfile_members(bytes(ustar))


def webdataset_shard(count: int) -> bytes:
    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as writer:
        for i in range(count):
            writer.write({"__key__": f"{i:09d}", "jpg": bytes([i]) * (100 + 37 * i), "txt": f"caption {i}",
                          "json": json.dumps({"key": i})})  # fmt: skip
    return buffer.getvalue()


def test_samples_equal_webdatasets_own_on_its_shards(tmp_path) -> None:
    urls = []
    for shard in range(3):
        path = tmp_path / f"{shard:05d}.tar"
        path.write_bytes(webdataset_shard(5 + shard))
        urls.append(str(path))
    with_meta = archive(tarfile.PAX_FORMAT, [("__meta__/info.json", b"{}"), *MEMBERS[:3]])
    (tmp_path / "meta.tar").write_bytes(with_meta)
    urls.append(str(tmp_path / "meta.tar"))
    expected = list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    got = list(wds.DataPipeline(wds.SimpleShardList(urls), TarShardSamples(handler=wds.reraise_exception)))
    assert len(expected) == 5 + 6 + 7 + 1
    assert got == expected


def test_a_cut_anywhere_yields_only_whole_members_and_raises_wherever_tarfile_does() -> None:
    data = webdataset_shard(4)
    full = tarfile_members(data)
    for cut in sorted({*range(0, len(data), 61), *range(0, len(data), 512)}):  # odd cuts, every block edge
        try:
            tarfile_members(data[:cut])
            tarfile_raised = False
        except tarfile.TarError:
            tarfile_raised = True
        got = []
        try:
            for member in tar_members(io.BytesIO(data[:cut])):
                got.append(member)
        except TarFormatError:
            pass
        else:
            assert not tarfile_raised, cut
        assert got == full[: len(got)], cut


def test_a_corrupt_header_is_an_error_not_a_silent_end() -> None:
    data = bytearray(webdataset_shard(3))
    second = data.index(b"././@PaxHeader", 512 * 3)
    data[second + 5] ^= 0xFF
    got = []
    with pytest.raises(TarFormatError, match="checksum"):
        for member in tar_members(io.BytesIO(bytes(data))):
            got.append(member)
    assert got == tarfile_members(bytes(data))[: len(got)] and got
