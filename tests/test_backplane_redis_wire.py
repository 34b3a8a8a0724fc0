"""rtckit.backplane._redis_wire: batches of posts and the RESP subset, bytes in, bytes out."""

from __future__ import annotations

import pytest

from rtckit.backplane._redis_wire import RespError, RespReader, command, join, publish, split


def test_a_batch_splits_back_into_its_posts_in_order() -> None:
    posts = [b"one", b"", b"1:x:y", bytes(range(256)), b"\x00\x00\x00\x05"]
    data = join(b"2:a:", posts)
    assert data.startswith(b"2:a:")
    assert split(data, len(b"2:a:")) == posts
    assert split(join(b"", [])) == []


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x00",  # cut inside a length
        b"\x00\x00\x00\x05abc",  # a post shorter than its length
        b"\x00\x00\x00\x01a\x00",  # a good post, then a cut length
        b"\xff\xff\xff\xff",  # a length past the end
    ],
)
def test_a_batch_whose_lengths_do_not_add_up_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="batch"):
        split(b"2:a:" + body, 4)


def test_publish_is_a_resp_array_of_three_strings() -> None:
    command = publish(b"ns:node:b", b"x\r\ny")
    assert command == b"*3\r\n$7\r\nPUBLISH\r\n$9\r\nns:node:b\r\n$4\r\nx\r\ny\r\n"
    assert RespReader().feed(command) == [[b"PUBLISH", b"ns:node:b", b"x\r\ny"]]


def test_replies_and_pushes_read_in_any_pieces() -> None:
    stream = (
        b":1\r\n:0\r\n"
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nab\r\nc\r\n"  # RESP3 push
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n"  # RESP2
        b"-ERR no\r\n+OK\r\n$-1\r\n_\r\n*-1\r\n!3\r\nbad\r\n*0\r\n"
    )
    expected = [
        1,
        0,
        [b"message", b"ch", b"ab\r\nc"],
        [b"message", b"ch", b""],
        RespError("ERR no"),
        b"OK",
        None,
        None,
        None,
        RespError("bad"),
        [],
    ]
    whole = RespReader().feed(stream)
    reader = RespReader()
    bytewise = [reply for i in range(len(stream)) for reply in reader.feed(stream[i : i + 1])]
    for got in (whole, bytewise):
        assert [str(r) if isinstance(r, RespError) else r for r in got] == [
            str(r) if isinstance(r, RespError) else r for r in expected
        ]
    assert reader.feed(b"") == []


@pytest.mark.parametrize("data", [b"?1\r\n", b":x\r\n", b"$3\r\nabcd\r\n", b"*1\r\n$z\r\n"])
def test_what_is_not_resp_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="RESP"):
        RespReader().feed(data)


def test_command_packs_strings_bytes_and_integers() -> None:
    packed = command(b"EVALSHA", "ab", 2, "k:é", b"\r\n")
    assert (
        packed
        == b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$4\r\nk:\xc3\xa9\r\n$2\r\n\r\n\r\n"
    )
    reader = RespReader()
    assert reader.feed(packed) == [[b"EVALSHA", b"ab", b"2", "k:é".encode(), b"\r\n"]]
