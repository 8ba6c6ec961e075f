"""Signed links, local storage and type sniffing."""

from __future__ import annotations

from pathlib import Path

import pytest

from openreel.storage import sniff
from openreel.storage.local import LocalStorage
from openreel.storage.signing import Signer


def test_signed_links_verify_and_expire() -> None:
    signer = Signer(b"secret")
    url = signer.url("http://h:1", "results/a b/1.mp4", ttl_s=60, now=1000)
    assert url.startswith("http://h:1/v2/files/results/a%20b/1.mp4?exp=1060&sig=")
    assert signer.own_key(url.replace("http://h:1", "https://elsewhere")) is None  # expired at real time
    fresh = signer.url("http://h:1", "results/x.mp4", ttl_s=60)
    assert signer.own_key(fresh) == "results/x.mp4"
    assert signer.own_key(fresh.replace("x.mp4", "y.mp4")) is None
    assert Signer(b"other").own_key(fresh) is None
    assert signer.own_key(url, check_expiry=False) == "results/a b/1.mp4"
    assert signer.own_key("https://example.com/v2/jobs/1") is None
    assert signer.own_key("http://[abc/v2/files/results/x.mp4") is None  # not a URL at all
    assert not signer.verify("k", "soon", "sig")


def test_links_made_for_a_public_url_with_a_path_are_known_as_this_servers() -> None:
    """Behind a proxy at https://example.com/openreel, an upload's link given back as an image."""
    signer = Signer(b"secret")
    url = signer.url("https://example.com/openreel/", "uploads/a.png", ttl_s=60)
    assert url.startswith("https://example.com/openreel/v2/files/uploads/a.png?")
    assert signer.own_key(url) == "uploads/a.png"


def test_a_link_is_forged_before_it_is_expired() -> None:
    """Only a link this server made is reported as expired: a bad signature says nothing of the time."""
    signer = Signer(b"secret")
    good = signer.signature("k", 1000)
    assert signer.check("k", "1000", good, now=999) == "valid"
    assert signer.check("k", "1000", good, now=1001) == "expired"
    assert signer.verify("k", "1000", good, now=1001, check_expiry=False)
    altered = good[:-1] + ("1" if good.endswith("0") else "0")
    assert signer.check("k", "1000", altered, now=1001) == "forged"
    assert signer.check("k", "2000", good, now=1001) == "forged"
    for exp, sig in (("1000", None), (None, good), ("soon", good), ("1000", "é")):
        assert signer.check("k", exp, sig, now=999) == "forged"


def test_storage_refuses_escaping_keys_and_commits_atomically(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "a/..", "../files-beside/x"):
        with pytest.raises(ValueError):
            storage.path(bad)
        with pytest.raises(ValueError):
            storage.exists(bad)
    staged = storage.staging_path("results/j/1.mp4")
    staged.write_bytes(b"data")
    assert not storage.exists("results/j/1.mp4")
    storage.commit(staged, "results/j/1.mp4")
    assert storage.path("results/j/1.mp4").read_bytes() == b"data" and not staged.exists()
    storage.delete("results/j/1.mp4")
    assert not storage.exists("results/j/1.mp4")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(8), sniff.PNG),
        (b"\xff\xd8\xff\xe0" + bytes(8), sniff.JPEG),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", sniff.WEBP),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", sniff.WAV),
        (b"GIF89a" + bytes(8), sniff.GIF),
        (b"\x00\x00\x00\x18ftypisom", sniff.MP4),
        (b"\x00\x00\x00\x14ftypqt  ", sniff.MOV),
        (b"\x00\x00\x00\x20ftypM4A ", sniff.M4A),
        (b"\x1a\x45\xdf\xa3" + bytes(8), sniff.WEBM),
        (b"OggS" + bytes(8), sniff.OGG),
        (b"ID3\x04" + bytes(8), sniff.MP3),
        (b"\xff\xfb\x90\x00" + bytes(8), sniff.MP3),
        (b"<html>hello</html>", None),
        (b"", None),
    ],
)
def test_sniffing_by_magic_bytes(head: bytes, expected: sniff.FileType | None) -> None:
    assert sniff.sniff(head) == expected
