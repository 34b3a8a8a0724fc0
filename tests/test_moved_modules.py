"""Modules that moved: each old name is the new object, and importing it warns with the new path."""

from __future__ import annotations

import importlib

import pytest

MOVED: list[tuple[str, str, str]] = [
    ("rtckit.turn", "TurnRestAuth", "rtckit.ice.turn"),
    ("rtckit.turn", "ice_server", "rtckit.ice.turn"),
    ("rtckit.candidates", "CandidatePolicy", "rtckit.ice.candidates"),
    ("rtckit.doctor", "run_doctor", "rtckit.ice.doctor"),
    ("rtckit.rtcconfig", "to_aiortc", "rtckit.ice.aiortc"),
    ("rtckit.rtcconfig", "select_for_aiortc", "rtckit.ice.aiortc"),
    ("rtckit.rtcconfig", "create_peer_connection", "rtckit.peer.connection"),
    ("rtckit.rtcconfig", "RtcKitPeerConnection", "rtckit.peer.connection"),
    ("rtckit.stunserver", "StunServer", "rtckit.stun.server"),
    ("rtckit.signaling.server", "SignalingServer", "rtckit.signaling.wsserver"),
    ("rtckit.signaling.server", "client_script", "rtckit.signaling.wsserver"),
    ("rtckit.certs", "lan_addresses", "rtckit.net"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_old_path_is_the_new_object_and_warns(old: str, name: str, new: str) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{new}\.{name}\b"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(
    ("package", "module"),
    [
        ("rtckit.ice", "rtckit.ice.config"),
        ("rtckit.ice", "rtckit.ice.servers"),
        ("rtckit.stun", "rtckit.stun.codec"),
        ("rtckit.coturn", "rtckit.coturn.config"),
        ("rtckit.coturn", "rtckit.coturn.process"),
        ("rtckit.certs", "rtckit.certs.x509"),
        ("rtckit.certs", "rtckit.certs.ca"),
        ("rtckit.certs", "rtckit.certs.dev"),
    ],
)
def test_a_package_keeps_its_old_names_without_a_warning(package: str, module: str) -> None:
    """A module that became a package re-exports its old names: no warning, same objects."""
    outer, inner = importlib.import_module(package), importlib.import_module(module)
    shared = set(outer.__all__) & set(inner.__all__)
    assert shared
    for name in shared:
        assert getattr(outer, name) is getattr(inner, name)


def test_an_unknown_name_of_an_old_path_is_an_attribute_error() -> None:
    module = importlib.import_module("rtckit.turn")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018 - the lookup is the test
