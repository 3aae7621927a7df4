#!/usr/bin/env python3
"""Requests whose handling once read memory nothing had written, sent to ferrule-gateway under
valgrind's memcheck, which reports such a read every time (the sanitizer tree cannot: ASan does
not track uninitialised memory, and a stack buffer's leftovers made the answer right by luck).
No cluster: the session and its CSRF token are signed here with the gateway's key, and the
requests are refused before any broker call. Usage: test_memcheck.py GATEWAY_BINARY; exit 77
(skipped) without valgrind."""
import base64
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

KEY = b"0123456789abcdef0123456789abcdef"


def sign(prefix, text):
    return hmac.new(KEY, (prefix + text).encode(), hashlib.sha256).hexdigest()


def post(url, cookie, body):
    req = urllib.request.Request(url, data=body.encode(), headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    binary = sys.argv[1]
    valgrind = shutil.which("valgrind")
    if not valgrind:
        print("valgrind is not installed (scripts/install-deps installs it): skipped")
        return 77
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FERRULE_GATEWAY_BIND=f"127.0.0.1:{port}", FERRULE_GATEWAY_PUBLIC_URL=base,
               FERRULE_BROKER_URL="tcp://127.0.0.1:9", FERRULE_ALLOW_PLAINTEXT="1",
               FERRULE_GATEWAY_SESSION_KEY=base64.b64encode(KEY).decode(), FERRULE_LOG_LEVEL="warning")
    with tempfile.TemporaryFile("w+") as log:
        gw = subprocess.Popen([valgrind, "-q", "--error-exitcode=9", binary], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(base + "/static/ferrule.css", timeout=1).close()
                    break
                except OSError:
                    if gw.poll() is not None:
                        break
                    time.sleep(0.05)
            payload = f"1|{int(time.time()) + 600}|ws1:|0011223344556677"
            value = f"{payload}.{sign('session|', payload)}"
            cookie, csrf = "ferrule_session=" + value, sign("csrf|", value)
            failed = []
            # a Connect with a provider that cannot be used and no name: the name was never
            # written, and the integration id was built from it before the 400
            for body in (f"csrf={csrf}&provider=fake%FFbox", f"csrf={csrf}&provider={'p' * 80}",
                         f"csrf={csrf}&provider=fake%00box&name=box"):
                status = post(base + "/dashboard/connect", cookie, body)
                if status != 400:
                    failed.append(f"POST /dashboard/connect {body[70:90]!r}...: {status}, wanted 400")
        finally:
            gw.terminate()
            try:
                rc = gw.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gw.kill()
                rc = gw.wait()
        log.seek(0)
        report = [line.rstrip() for line in log if line.startswith("==")]
    for f in failed:
        print(f)
    if rc != 0 or report:
        print(f"ferrule-gateway under valgrind exited with {rc}; memcheck said:")
        print("\n".join(report[:60]))
        return 1
    if failed:
        return 1
    print("ok: memcheck found nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
