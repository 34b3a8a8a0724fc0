"""The public surface of the package: exported names, version, exception tree."""

from __future__ import annotations

import inspect

import rtckit
from rtckit import errors


def test_all_is_sorted_and_complete() -> None:
    assert rtckit.__all__ == sorted(rtckit.__all__)
    for name in rtckit.__all__:
        assert hasattr(rtckit, name), name


def test_version() -> None:
    assert isinstance(rtckit.__version__, str)
    assert rtckit.__version__[0].isdigit()


def test_every_error_is_exported_and_derives_from_root() -> None:
    classes = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }
    assert set(classes) == set(errors.__all__)
    for name, cls in classes.items():
        assert issubclass(cls, rtckit.RtcKitError), name
        assert getattr(rtckit, name) is cls


def test_error_tree_is_drawn_in_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, f"{name} missing from the drawn tree"


def test_builtin_bases() -> None:
    assert issubclass(rtckit.ConfigurationError, ValueError)
    assert issubclass(rtckit.CredentialError, PermissionError)
    assert issubclass(rtckit.AuthError, PermissionError)
    assert issubclass(rtckit.IceError, ConnectionError)
    assert issubclass(rtckit.TurnAuthError, rtckit.IceError)
