"""Path parsing and name validation: one place, plain lists of cases."""
import unicodedata

import pytest

from providers import paths
from providers.errors import InvalidPath


@pytest.mark.parametrize("raw,parts", [
    ("/", ()), ("", ()), ("/a/b", ("a", "b")), ("a//b/", ("a", "b")),
    ("/Résumé.txt", ("Résumé.txt",)), ("/名前/ファイル", ("名前", "ファイル")),
    ("/a b/#%+.txt", ("a b", "#%+.txt")), ("/Case/case", ("Case", "case")),
    (b"/bytes/ok", ("bytes", "ok")), ("/.hidden", (".hidden",)), ("/...", ("...",)),
])
def test_valid_paths(raw, parts):
    assert paths.parse(raw) == parts


def test_nfd_and_nfc_are_the_same_name():
    nfd = unicodedata.normalize("NFD", "/Café/naïve.txt")
    assert nfd != "/Café/naïve.txt"
    assert paths.parse(nfd) == paths.parse("/Café/naïve.txt")


@pytest.mark.parametrize("raw", [
    "/a/../b", "/..", "/./a", "/a/\x00b", "\x00", b"/bad\xff\xfe", "/" + "x" * 256,
    "/" + "é" * 128, "/a" * 3000, "/\udcff",
])
def test_refused_paths(raw):
    with pytest.raises(InvalidPath) as e:
        paths.parse(raw)
    assert str(e.value)


def test_name_of_255_bytes_is_accepted():
    assert paths.parse("/" + "x" * 255) == ("x" * 255,)


@pytest.mark.parametrize("raw,cwd,want", [
    ("..", "/", "/"), ("../../etc/passwd", "/a", "/etc/passwd"), ("b/./c/..", "/a", "/a/b"),
    ("/x/../../..", "/", "/"), (".", "/a/b", "/a/b"),
])
def test_resolve_dots_stays_inside(raw, cwd, want):
    assert paths.resolve_dots(raw, cwd) == want
