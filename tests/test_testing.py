from __future__ import annotations

from rpccompat import testing
from rpccompat.demo import alpha, beta


def test_history_check_passes_for_each_release_of_the_demo():
    assert (
        testing.check_history(alpha.HISTORY, alpha.OBJECTS, [alpha.VolumeManager]) == []
    )
    assert testing.check_history(beta.HISTORY, beta.OBJECTS, [beta.VolumeManager]) == []


def test_history_check_names_every_mismatch():
    problems = testing.check_history(alpha.HISTORY, beta.OBJECTS, [beta.VolumeManager])
    assert any("object Volume is at 1.1" in p for p in problems)
    assert any("VolumeManager (volume) is at 1.1" in p for p in problems)


def test_fingerprints_regenerate_then_catch_a_change(tmp_path, monkeypatch):
    expected = tmp_path / "hashes.json"
    monkeypatch.setenv(testing.REGENERATE_ENV, "1")
    assert testing.check_fingerprints(beta.OBJECTS, expected) == []
    monkeypatch.delenv(testing.REGENERATE_ENV)
    assert testing.check_fingerprints(beta.OBJECTS, expected) == []
    problems = testing.check_fingerprints(alpha.OBJECTS, expected)
    assert any(p.startswith("Volume: fingerprint 1.0-") for p in problems)
