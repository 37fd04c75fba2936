"""HTTP/1.1 transport: keep-alive, chunked bodies, limits, Expect, HTTP/1.0."""

from __future__ import annotations

import json

from conftest import Conn, build_request


def test_keep_alive_serves_several_requests_on_one_connection(port):
    conn = Conn(port)
    try:
        for i in range(3):
            r = conn.request("POST", "/v1/invoke/echo", json.dumps({"i": i}).encode())
            assert (r.status, r.json()) == (200, {"i": i})
            assert r.header("connection") is None
        assert conn.request("GET", "/healthz").status == 200
        # errors keep the connection too
        assert conn.request("POST", "/v1/invoke/no-such", b"{}").status == 404
        assert conn.request("POST", "/v1/invoke/echo", b"{", {"Berth-Deadline-Ms": "0"}).status == 504
        assert conn.request("POST", "/v1/invoke/echo", b"[2]").json() == [2]
        assert not conn.closed_by_peer(0.2)
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(port):
    conn = Conn(port)
    conn.send(build_request("POST", "/v1/invoke/echo", b"1") + build_request("POST", "/v1/invoke/echo", b"2"))
    assert conn.read_response().body == b"1"
    assert conn.read_response().body == b"2"
    conn.close()


def test_connection_close_is_honoured(port):
    conn = Conn(port)
    r = conn.request("GET", "/healthz", headers={"Connection": "close"})
    assert r.status == 200 and r.header("connection") == "close"
    assert conn.closed_by_peer()
    conn.close()


def test_http10_closes_unless_keep_alive_is_asked(port):
    conn = Conn(port)
    conn.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert conn.read_response().status == 200
    assert conn.closed_by_peer()
    conn.close()
    conn = Conn(port)
    conn.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert conn.read_response().header("connection") == "keep-alive"
    conn.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert conn.read_response().status == 200
    conn.close()


def test_chunked_body_is_accepted(port):
    conn = Conn(port)
    body = b'{"name": "chunked", "n": [1, 2, 3]}'
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
    conn.send(
        build_request("POST", "/v1/invoke/echo", None, {"Transfer-Encoding": "chunked"})
        + chunks
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )
    r = conn.read_response()
    assert (r.status, r.json()) == (200, {"name": "chunked", "n": [1, 2, 3]})
    # the connection is still in step
    assert conn.request("POST", "/v1/invoke/echo", b"true").json() is True
    conn.close()


def test_chunked_body_over_the_limit_is_413(port):
    conn = Conn(port)
    conn.send(build_request("POST", "/v1/invoke/echo", None, {"Transfer-Encoding": "chunked"}))
    piece = b"a" * 65536
    sent = 0
    response = None
    try:
        while sent <= 4 * 1024 * 1024:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass
    response = conn.read_response()
    assert (response.status, response.code) == (413, "payload_too_large")
    conn.close()


def test_bad_chunk_size_is_400(port):
    conn = Conn(port)
    conn.send(
        build_request("POST", "/v1/invoke/echo", None, {"Transfer-Encoding": "chunked"}) + b"zz\r\nab\r\n0\r\n\r\n"
    )
    r = conn.read_response()
    assert (r.status, r.code) == (400, "bad_request")
    conn.close()


def test_oversize_body_is_413_with_the_declared_length(port):
    conn = Conn(port)
    body = b"x" * (4 * 1024 * 1024 + 10)
    conn.send(build_request("POST", "/v1/invoke/echo", body))
    r = conn.read_response()
    assert (r.status, r.code) == (413, "payload_too_large")
    assert r.header("connection") == "close"
    conn.close()


def test_headers_up_to_8_kib_are_accepted(port):
    headers = [(f"X-Fill-{i}", "v" * 1000) for i in range(8)]  # about 8.1 KiB with the names
    r = Conn(port).request("POST", "/v1/invoke/echo", b"{}", headers + [("Berth-Request-Id", "big")])
    assert r.status == 200 and r.header("berth-request-id") == "big"
    r = Conn(port).request("GET", "/healthz", headers={"X-One": "v" * 8000})
    assert r.status == 200


def test_headers_far_over_the_limit_are_431(port):
    conn = Conn(port)
    r = conn.request("GET", "/healthz", headers={"X-Huge": "v" * 40000})
    assert r.status == 431
    assert r.json()["error"]["code"] == "request_header_fields_too_large"
    conn.close()
    conn = Conn(port)
    r = conn.request("GET", "/healthz", headers=[(f"X-{i}", "1") for i in range(200)])
    assert r.status == 431
    conn.close()


def test_expect_100_continue(port):
    conn = Conn(port)
    body = b'{"e": 1}'
    conn.send(
        build_request("POST", "/v1/invoke/echo", None, {"Content-Length": str(len(body)), "Expect": "100-continue"})
    )
    assert conn.read_response().status == 100
    conn.send(body)
    r = conn.read_response()
    assert (r.status, r.json()) == (200, {"e": 1})
    conn.close()


def test_malformed_request_line_is_400_and_closes(port):
    for raw in (b"NONSENSE\r\n\r\n", b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", b"GET /healthz HTTP/9.9\r\n\r\n"):
        conn = Conn(port)
        conn.send(raw)
        r = conn.read_response()
        assert r.status in (400, 505), raw
        assert conn.closed_by_peer()
        conn.close()


def test_conflicting_content_lengths_are_400(port):
    conn = Conn(port)
    conn.send(b"POST /v1/invoke/echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    assert conn.read_response().status == 400
    conn.close()


def test_absolute_form_target_and_query_are_routed_by_path(port):
    conn = Conn(port)
    assert conn.request("GET", "http://plugin:8080/healthz?x=1").status == 200
    assert conn.request("POST", "/v1/invoke/echo?debug=1", b"3").json() == 3
    conn.close()


def test_content_length_of_thousands_of_digits_is_answered_413_not_dropped(port):
    # int() refuses strings of more than 4300 digits; the server must still answer.
    conn = Conn(port, timeout=5.0)
    conn.send(b"POST /v1/invoke/echo HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
    r = conn.read_response()
    assert r.status == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert r.header("connection") == "close"
    conn.close()
    # leading zeros do not make a small length huge, and equal repeats are one length
    conn = Conn(port, timeout=5.0)
    conn.send(b"POST /v1/invoke/echo HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b"2, 2\r\n\r\n[]")
    r = conn.read_response()
    assert (r.status, r.json()) == (200, [])
    conn.close()
    # a long length on an unknown path is still 404 first
    conn = Conn(port, timeout=5.0)
    conn.send(b"POST /nowhere HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
    assert conn.read_response().status == 404
    conn.close()


def test_bare_lf_line_endings_are_accepted(port):
    conn = Conn(port, timeout=5.0)
    conn.send(b"GET /healthz HTTP/1.1\n\n")
    r = conn.read_response()
    assert (r.status, r.json()) == (200, {"status": "ok"})
    conn.send(b"POST /v1/invoke/echo HTTP/1.1\nContent-Length: 3\r\nBerth-Request-Id: lf-1\n\n[1]")
    r = conn.read_response()
    assert (r.status, r.json(), r.header("berth-request-id")) == (200, [1], "lf-1")
    # a lone CR inside a header value is still refused
    conn.send(b"GET /healthz HTTP/1.1\nX-A: a\rb\n\n")
    assert conn.read_response().status == 400
    conn.close()
