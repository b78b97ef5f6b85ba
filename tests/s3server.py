"""A local S3-compatible server for the tests and benchmarks: moto's server mode on 127.0.0.1 with
IAM enforcement, and a fault-injecting reverse proxy in front of it.

- :class:`MotoServer`: ``moto_server`` as a subprocess (it dies with the process that started it),
  ready in about a second. Two IAM users are made while authentication is still off: ``admin``
  (``s3:*``) and ``lister`` (``s3:ListBucket`` only: valid credentials that lack a permission);
  authentication is then switched on, so unknown keys, wrong secrets and missing permissions are
  refused as AWS refuses them (403 InvalidAccessKeyId / SignatureDoesNotMatch / AccessDenied).
- :class:`FaultProxy`: a stdlib HTTP/1.1 reverse proxy that, per request and with a seeded RNG,
  answers 503 SlowDown or 500 InternalError, resets the connection, or cuts a 2xx body short; it
  forwards every other request unchanged (the Host header too: SigV4 signs it) and counts what it
  did. With ``faults={}`` it is a counting proxy (``requests`` records every request).
"""
from __future__ import annotations

import http.client
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    from jdct_cli.convert.lifeline import die_with_parent

    die_with_parent()


class MotoServer:
    """``moto_server`` on 127.0.0.1 (see the module docstring). ``endpoint``; ``admin`` and
    ``lister``: (access key id, secret) pairs; ``env()``: the environment a client of it needs."""

    def __init__(self, log: Optional[Path] = None):
        exe = Path(sys.executable).with_name("moto_server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        for _ in range(5):
            self.port = free_port()
            self.log = open(log or os.devnull, "wb")
            self.proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            if self._wait_ready():
                break
            self.stop()
        else:
            raise RuntimeError("moto_server did not start")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._set_up_iam()

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/moto-api/", timeout=1):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def _client(self, service: str, key=("bootstrap", "bootstrap")):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key[0],
                            aws_secret_access_key=key[1])

    def _set_up_iam(self) -> None:
        iam = self._client("iam")
        self.admin = self._user(iam, "jdct-admin", ["s3:*"])
        self.lister = self._user(iam, "jdct-lister", ["s3:ListBucket"])
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    @staticmethod
    def _user(iam, name: str, actions: list[str]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def s3(self, key=None):
        """A boto3 S3 client (admin credentials unless ``key``)."""
        return self._client("s3", key or self.admin)

    def create_bucket(self, name: str) -> str:
        self.s3().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """{key relative to ``prefix``: bytes} of every object under it."""
        s3 = self.s3()
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents") or ():
                out[obj["Key"][len(prefix):].lstrip("/")] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        return out

    def env(self, endpoint: Optional[str] = None) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.admin[0], "AWS_SECRET_ACCESS_KEY": self.admin[1],
                "AWS_ENDPOINT_URL": endpoint or self.endpoint, "AWS_REGION": REGION}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
_INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
             b"<Message>We encountered an internal error. Please try again.</Message></Error>")
_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
           b"<Message>Access Denied</Message></Error>")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "trailer",
        "upgrade"}


class FaultProxy:
    """A reverse proxy to ``upstream`` (host, port) on 127.0.0.1 injecting faults (module docstring).

    ``faults``: {"503": p, "500": p, "reset": p, "truncate": p} probabilities per request (their
    sum at most 1); ``latency``: seconds added to every request. ``counts``: faults injected by
    kind and ``"forwarded"``; ``requests``: (method, path, Range header, response body bytes) of
    every forwarded request. ``deny``: a predicate of (method, path); requests it holds are
    answered 403 AccessDenied (counted as "denied")."""

    def __init__(self, upstream: tuple[str, int], faults: Optional[dict] = None, seed: int = 0,
                 latency: float = 0.0, deny=None):
        self.upstream = upstream
        self.deny = deny  # (method, path) -> True: answer 403 AccessDenied (a permission taken away)
        self.faults = dict(faults or {})
        self.rng = random.Random(seed)
        self.latency = latency
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "503": 0, "500": 0, "reset": 0, "truncate": 0, "denied": 0}
        self.requests: list[tuple[str, str, Optional[str], int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reset(self):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _error(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                body = self._body()
                if proxy.latency:
                    time.sleep(proxy.latency)
                if proxy.deny is not None and proxy.deny(self.command, self.path):
                    with proxy.lock:
                        proxy.counts["denied"] += 1
                    return self._error(403, _DENIED)
                fault = proxy._draw()
                if fault == "503":
                    return self._error(503, _SLOWDOWN)
                if fault == "500":
                    return self._error(500, _INTERNAL)
                if fault == "reset":
                    return self._reset()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if fault == "truncate" and resp.status in (200, 206) and len(data) > 1:
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    return self._reset()
                if fault == "truncate":
                    with proxy.lock:  # not applicable to this answer: it went through whole
                        proxy.counts["truncate"] -= 1
                with proxy.lock:
                    proxy.counts["forwarded"] += 1
                    proxy.requests.append((self.command, self.path, self.headers.get("Range"), len(data)))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self.thread.start()

    def _draw(self) -> Optional[str]:
        with self.lock:
            x = self.rng.random()
            for kind, p in self.faults.items():
                if x < p:
                    self.counts[kind] += 1
                    return kind
                x -= p
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
