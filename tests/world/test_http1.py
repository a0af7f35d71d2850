"""The gateway wire's HTTP/1.1 framing: which failed requests may be sent again."""

from __future__ import annotations

import asyncio

from convergent.world import http1


def test_a_request_is_sent_again_only_when_no_byte_of_answer_came() -> None:
    """A kept-alive connection the member closed while idle fails with nothing read: sent
    again on a new connection. Part of an answer means etcd may have done the request (a
    second LeaseGrant would leave a lease behind), and a timeout means it may still: not
    sent again."""
    assert http1.unanswered(asyncio.IncompleteReadError(b"", 4))
    assert http1.unanswered(ConnectionResetError())
    assert http1.unanswered(BrokenPipeError())
    assert not http1.unanswered(asyncio.IncompleteReadError(b"HTTP/1.1 200", None))
    assert not http1.unanswered(TimeoutError())
    assert not http1.unanswered(ValueError("not an HTTP answer"))


def test_a_chunked_answer_is_read_whole() -> None:
    async def read() -> tuple[bytes, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        reader.feed_data(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
        reader.feed_eof()
        status, headers = await http1.head(reader)
        assert status == 200
        return await http1.body(reader, headers)

    assert asyncio.run(read()) == (b"abcde", True)
