#!/usr/bin/env python3
"""The gateway in a real headless Chromium, as people use it.

Starts a test deployment (ferrule-test-cluster: PostgreSQL database, fake OAuth provider,
brokers, workers), a ferrule-gateway in front of it, and Debian's chromium through
chromedriver's WebDriver HTTP API (W3C WebDriver, spoken here with urllib: nothing to download).
Then, in the browser:

  - a dashboard link shows a confirm page ("Open the dashboard of WS"), which loading again does
    not use up (link scanners and mail previews load links); its button opens the dashboard:
    the integrations, their status and diagnosis;
  - Disconnect changes the status; Connect goes through the fake provider and back to the
    dashboard, which shows the new integration connected; Reconnect mends a needs_reconnect one;
  - a POST without its CSRF token, a used, a tampered and an expired link are refused;
  - the connect flow from an authorization_url ends on the page of each outcome (connected,
    access_denied, scopes_reduced, code_expired_or_used, state_invalid, no_refresh_token,
    invalid_scope, redirect_uri_mismatch, invalid_client, provider_unavailable), asserted on the
    DOM (text and the action's button or link), with a screenshot of each page.

Screenshots and logs go to FERRULE_BROWSER_ARTIFACTS (default: ./browser-artifacts). Exit 0 on
success, 1 on a failure, 77 (skip) without FERRULE_TEST_PG_ADMIN_URL. Never prints a token.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "clients/python"))

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
WS = "web:"
SESSION_KEY = base64.b64encode(os.urandom(32)).decode()


class Failure(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Failure(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: object = None, timeout: float = 60) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            text = r.read()
    except urllib.error.HTTPError as e:
        text = e.read()
    return json.loads(text) if text else {}


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (Failure, OSError):     # not there yet: a page still loading, a port not yet open
            pass
        time.sleep(0.1)
    raise Failure(f"timed out waiting for {what}")


# --- WebDriver ----------------------------------------------------------------------------------

class Browser:
    """One Chromium session over chromedriver's W3C WebDriver endpoints."""

    def __init__(self, artifacts: Path) -> None:
        self.artifacts = artifacts
        self.profile = tempfile.mkdtemp(prefix="ferrule-chromium-")
        self.port = free_port()
        driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        binary = shutil.which("chromium") or "/usr/bin/chromium"
        check(os.access(driver, os.X_OK) and os.access(binary, os.X_OK),
              "chromium and chromedriver are not installed: run scripts/install-deps")
        self.log = open(artifacts / "chromedriver.log", "wb")
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: http_json("GET", self.base + "/status", timeout=2).get("value", {}).get("ready"),
                 "chromedriver to start")
        args = ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", f"--user-data-dir={self.profile}", "--window-size=1200,900",
                "--lang=en-US"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")       # CI runs as root, where Chromium's sandbox cannot start
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "pageLoadStrategy": "normal",
                                                 "goog:chromeOptions": {"binary": binary, "args": args}}}}
        r = http_json("POST", self.base + "/session", caps, timeout=120)
        value = r.get("value", {})
        check("sessionId" in value, f"chromedriver could not start Chromium: {value.get('message', r)}")
        self.sid = value["sessionId"]
        self.shots = 0

    def _cmd(self, method: str, path: str, body: object = None) -> object:
        r = http_json(method, f"{self.base}/session/{self.sid}{path}", body)
        value = r.get("value") if isinstance(r, dict) else None
        if not isinstance(r, dict) or "value" not in r:
            raise Failure(f"webdriver {method} {path}: an answer without a value: {str(r)[:300]}")
        if isinstance(value, dict) and "error" in value:
            raise Failure(f"webdriver {method} {path}: {value['error']}: {value.get('message', '')[:300]}")
        return value

    def go(self, url: str) -> None:
        self._cmd("POST", "/url", {"url": url})

    def url(self) -> str:
        return self._cmd("GET", "/url")

    def find(self, css: str) -> str:
        value = self._cmd("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(value, dict) or ELEMENT not in value:
            raise Failure(f"no element \"{css}\" on the page")
        return value[ELEMENT]

    def find_all(self, css: str) -> list[str]:
        value = self._cmd("POST", "/elements", {"using": "css selector", "value": css})
        if not isinstance(value, list):
            raise Failure(f"could not look for \"{css}\" on the page")
        return [e[ELEMENT] for e in value if isinstance(e, dict) and ELEMENT in e]

    def text(self, css: str) -> str:
        return self._cmd("GET", f"/element/{self.find(css)}/text")

    def attr(self, css: str, name: str) -> str | None:
        return self._cmd("GET", f"/element/{self.find(css)}/attribute/{name}")

    def click(self, css: str) -> None:
        self._cmd("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self._cmd("POST", f"/element/{self.find(css)}/value", {"text": text})

    def run(self, script: str) -> object:
        return self._cmd("POST", "/execute/sync", {"script": script, "args": []})

    def h1(self) -> str:
        return self.text("h1")

    def body(self) -> str:
        return self.text("body")

    def screenshot(self, name: str) -> None:
        self.shots += 1
        png = base64.b64decode(self._cmd("GET", "/screenshot"))
        (self.artifacts / f"{self.shots:02d}-{name}.png").write_bytes(png)

    def close(self) -> None:
        try:
            http_json("DELETE", f"{self.base}/session/{self.sid}", timeout=30)
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# --- the deployment -------------------------------------------------------------------------------

def read_line(proc: subprocess.Popen, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("ferrule-test-cluster did not answer in time")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise Failure(f"ferrule-test-cluster exited (status {proc.wait()})")
            line += chunk
    return line


class Deployment:
    def __init__(self, artifacts: Path) -> None:
        binary = os.environ.get("FERRULE_TEST_CLUSTER") or str(REPO / "build/tests/integration/ferrule-test-cluster")
        self.gateway_bin = os.environ.get("FERRULE_GATEWAY_BIN") or str(REPO / "build/gateway/ferrule-gateway")
        self.cluster_log = open(artifacts / "cluster.log", "wb")
        self.cluster = subprocess.Popen([binary, "--brokers", "1", "--workers", "1", "--name", "browser"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.cluster_log)
        self.info = json.loads(read_line(self.cluster, 120))
        self.fake_url = self.info["fake_provider_url"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.callback = self.url + "/oauth/callback"
        env = dict(os.environ)
        env.update({
            "FERRULE_GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "FERRULE_GATEWAY_PUBLIC_URL": self.url,
            "FERRULE_BROKER_URL": ",".join(self.info["brokers"]),
            "FERRULE_GATEWAY_SESSION_KEY": SESSION_KEY,
            "FERRULE_GATEWAY_PROVIDERS": "fakebox,fakegoogle",
            "FERRULE_LOG_LEVEL": "info",
        })
        if self.info.get("client_secret_key_file"):
            env["FERRULE_CURVE_SECRET_KEY_FILE"] = self.info["client_secret_key_file"]
            env["FERRULE_BROKER_PUBLIC_KEY_FILE"] = self.info["server_public_key_file"]
        else:
            env["FERRULE_ALLOW_PLAINTEXT"] = "1"
        self.gateway_log_path = artifacts / "gateway.log"
        self.gateway_log = open(self.gateway_log_path, "wb")
        self.gateway = subprocess.Popen([self.gateway_bin], env=env, stdout=self.gateway_log, stderr=subprocess.STDOUT)
        wait_for(self._gateway_up, "ferrule-gateway to listen")
        import ferrule
        keys = {}
        for arg, key in (("server_public_key", "server_public_key_file"),
                         ("client_secret_key", "client_secret_key_file"),
                         ("client_public_key", "client_public_key_file")):
            if self.info.get(key):
                keys[arg] = Path(self.info[key])
        self.client = ferrule.Client(self.info["brokers"], timeout=20, **keys)
        for provider in ("fakebox", "fakegoogle"):
            self.fake("PUT", f"/admin/providers/{provider}", {"redirect_uris": [self.callback]})

    def _gateway_up(self) -> bool:
        check(self.gateway.poll() is None, f"ferrule-gateway exited: see {self.gateway_log_path}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def fake(self, method: str, path: str, body: object = None) -> object:
        return http_json(method, self.fake_url + path, body)

    def call(self, op: str, args: dict) -> dict:
        return self.client.call(op, args)

    def grant_import(self, integration: str, provider: str = "fakebox") -> None:
        g = self.fake("POST", "/admin/grants", {"provider": provider, "scopes": ["read"]})
        self.client.import_tokens(integration, provider, g["refresh_token"], scopes=g["scopes"],
                                  access_token=g["access_token"], expires_in=3600)

    def link(self, ttl: int | None = None, tamper: bool = False) -> str:
        args = {"integration": WS}
        if ttl:
            args["ttl_s"] = ttl
        token = self.call("dashboard_link", args)["link_token"]
        if tamper:
            token = token[:-1] + ("A" if token[-1] != "A" else "B")
        return f"{self.url}/dashboard/open?link={token}&workspace={WS}"

    def connect_url(self, integration: str, provider: str = "fakebox", scopes: list[str] | None = None) -> str:
        r = self.call("connect", {"integration": integration, "provider": provider, "redirect_uri": self.callback,
                                  "scopes": scopes or ["read"]})
        return r["authorization_url"]

    def status(self, integration: str) -> str:
        return self.client.status(integration)["status"]

    def close(self) -> int:
        rc = 0
        try:
            self.client.close()
        except Exception:
            pass
        self.gateway.send_signal(signal.SIGTERM)
        try:
            rc = self.gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.gateway.kill()
            rc = -1
        self.gateway_log.close()
        self.cluster.stdin.close()
        try:
            crc = self.cluster.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.cluster.kill()
            crc = -1
        self.cluster_log.close()
        return rc or crc


# --- the scenarios -----------------------------------------------------------------------------------

def row(integration: str) -> str:
    return f'tr[data-integration="{integration}"]'


def on_dashboard(b: Browser) -> bool:
    return urllib.parse.urlparse(b.url()).path == "/dashboard" and b.h1() == "Integrations"


def dashboard_flows(d: Deployment, b: Browser, expired_link: str, expired_at: float) -> None:
    d.grant_import(WS + "box")
    d.grant_import(WS + "stale")
    d.fake("POST", "/admin/faults", {"provider": "fakebox", "kind": "invalid_grant", "count": 1})
    try:
        d.client.refresh(WS + "stale")
    except Exception as e:            # needs_reconnect, as expected
        check(type(e).__name__ == "NeedsReconnect", f"refresh answered {type(e).__name__}, not NeedsReconnect")
    check(d.status(WS + "stale") == "needs_reconnect", "web:stale is not needs_reconnect")

    # open a dashboard link: a confirm page, loaded twice (as a link scanner would first), then
    # its button: the integrations with their status and diagnosis
    link = d.link()
    for _ in range(2):
        b.go(link)
        wait_for(lambda: b.h1() == f"Open the dashboard of {WS}", "the dashboard link's confirm page")
    b.screenshot("link-confirm")
    b.click("#open")
    wait_for(lambda: on_dashboard(b), "the dashboard after opening the link")
    b.screenshot("dashboard")
    check("active" in b.text(row(WS + "box") + " .status"), "web:box is not shown active")
    check("needs_reconnect" in b.text(row(WS + "stale") + " .status"), "web:stale is not shown needs_reconnect")
    check(b.text(row(WS + "stale") + " .diagnosis") != "", "web:stale has no diagnosis")
    check(b.text(row(WS + "stale") + " button.primary") == "Reconnect", "web:stale has no Reconnect button")

    # Disconnect: the status changes
    b.click(row(WS + "box") + " button.danger")
    wait_for(lambda: on_dashboard(b) and "disconnected" in b.text(row(WS + "box") + " .status"),
             "web:box to show disconnected")
    check("is disconnected" in b.text("#notice"), "no notice of the disconnect")
    check(d.status(WS + "box") == "disconnected", "web:box is not disconnected in the service")
    b.screenshot("after-disconnect")

    # Connect: through the fake provider and back to the dashboard, connected
    b.run("document.getElementById('provider').value = 'fakebox';")
    b.type("#name", "new")
    b.click("#connect")
    wait_for(lambda: on_dashboard(b) and b.find_all(row(WS + "new")), "the dashboard after Connect")
    check("active" in b.text(row(WS + "new") + " .status"), "web:new is not shown active")
    check("is connected" in b.text("#notice"), "no notice of the connect")
    check(d.status(WS + "new") == "active", "web:new is not active in the service")
    b.screenshot("after-connect")

    # Reconnect a needs_reconnect integration
    b.click(row(WS + "stale") + " button.primary")
    wait_for(lambda: on_dashboard(b) and "active" in b.text(row(WS + "stale") + " .status"),
             "web:stale to show active after Reconnect")
    check(d.status(WS + "stale") == "active", "web:stale is not active in the service")
    b.screenshot("after-reconnect")

    # details: diagnosis and history
    b.click(row(WS + "stale") + " a")
    wait_for(lambda: b.h1() == WS + "stale", "the details page")
    check(b.text("#symptom") != "" and b.find_all("#history tbody tr"), "the details page lacks the diagnosis or history")
    b.screenshot("details")

    # a POST without its CSRF token is refused and changes nothing
    b.go(d.url + "/dashboard")
    wait_for(lambda: on_dashboard(b), "the dashboard")
    b.run("document.querySelectorAll('input[name=csrf]').forEach(function (e) { e.remove (); });")
    b.click(row(WS + "new") + " button.danger")
    wait_for(lambda: b.h1() == "This form could not be accepted", "the CSRF refusal")
    b.screenshot("csrf-refused")
    check(d.status(WS + "new") == "active", "a POST without CSRF token disconnected web:new")

    # used, tampered and expired links: the confirm page, then the refusal of its button
    def press(url: str) -> None:
        b.go(url)
        wait_for(lambda: b.h1() == f"Open the dashboard of {WS}", "the dashboard link's confirm page")
        b.click("#open")

    press(link)
    wait_for(lambda: "expired or was already used" in b.h1(), "a used link to be refused")
    b.screenshot("link-used")
    press(d.link(tamper=True))
    wait_for(lambda: "expired or was already used" in b.h1(), "a tampered link to be refused")
    b.screenshot("link-tampered")
    left = expired_at - time.time()
    if left > 0:
        time.sleep(left + 1)          # the link's lifetime, not a speed assertion
    press(expired_link)
    wait_for(lambda: "expired or was already used" in b.h1(), "an expired link to be refused")
    b.screenshot("link-expired")


def callback_pages(d: Deployment, b: Browser) -> None:
    def through(integration: str, provider: str = "fakebox", scopes: list[str] | None = None) -> None:
        b.go(d.connect_url(integration, provider, scopes))

    # connected
    through(WS + "flow1")
    wait_for(lambda: b.h1() == "Connected to fakebox", "the connected page")
    b.screenshot("callback-connected")

    # state_invalid: the same callback URL again
    b.go(b.url())
    wait_for(lambda: "expired or was already used" in b.h1(), "the page of a reloaded callback")
    check("already completed" in b.body(), "the reloaded callback does not say it was completed")
    b.screenshot("callback-state-invalid")

    # access_denied, then Try again succeeds
    d.fake("PUT", "/admin/providers/fakebox", {"deny": True})
    through(WS + "flow2")
    wait_for(lambda: b.h1() == "Access to fakebox was not granted", "the access_denied page")
    check(b.text("form[action='/oauth/retry'] button") == "Try again", "no Try again button")
    b.screenshot("callback-access-denied")
    d.fake("PUT", "/admin/providers/fakebox", {"deny": False})
    b.click("form[action='/oauth/retry'] button")
    wait_for(lambda: b.h1() == "Connected to fakebox", "Try again to connect")
    check(d.status(WS + "flow2") == "active", "Try again did not connect web:flow2")

    # scopes_reduced
    d.fake("PUT", "/admin/providers/fakebox", {"grant_scopes": ["read"]})
    through(WS + "flow3", scopes=["read", "write"])
    wait_for(lambda: b.h1() == "Connected to fakebox with fewer permissions", "the scopes_reduced page")
    check(b.text("ul.scopes") == "write", "the missing scope is not listed")
    check(b.text("form[action='/oauth/retry'] button") == "Approve all permissions", "no Approve all permissions")
    b.screenshot("callback-scopes-reduced")
    d.fake("PUT", "/admin/providers/fakebox", {"grant_scopes": None})

    # code_expired_or_used
    d.fake("POST", "/admin/faults", {"provider": "fakebox", "kind": "invalid_grant", "count": 1})
    through(WS + "flow4")
    wait_for(lambda: b.h1() == "The sign-in with fakebox did not finish", "the code_expired_or_used page")
    check(b.text("form[action='/oauth/retry'] button") == "Try again", "no Try again button")
    b.screenshot("callback-code-expired")

    # no_refresh_token (Google style)
    d.fake("PUT", "/admin/providers/fakegoogle", {"issue_refresh_token": False})
    through(WS + "flow5", provider="fakegoogle")
    wait_for(lambda: b.h1() == "fakegoogle connected without lasting access", "the no_refresh_token page")
    check(b.text("form[action='/oauth/retry'] button") == "Reconnect", "no Reconnect button")
    b.screenshot("callback-no-refresh-token")
    d.fake("PUT", "/admin/providers/fakegoogle", {"issue_refresh_token": True})

    # provider_unavailable
    d.fake("POST", "/admin/faults", {"provider": "fakebox", "kind": "status", "status": 503, "count": 1})
    through(WS + "flow6")
    wait_for(lambda: b.h1() == "fakebox is having trouble right now", "the provider_unavailable page")
    b.screenshot("callback-provider-unavailable")

    # the provider redirects with an error: invalid_scope, redirect_uri_mismatch, invalid_client
    def provider_error(integration: str, error: str) -> None:
        url = d.connect_url(integration)
        state = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["state"][0]
        b.go(f"{d.callback}?error={error}&state={urllib.parse.quote(state)}")

    provider_error(WS + "flow7", "invalid_scope")
    wait_for(lambda: b.h1() == "fakebox refused the permissions Ferrule asked for", "the invalid_scope page")
    check(b.text("#contact-support") == "Contact support", "no Contact support link on the invalid_scope page")
    b.screenshot("callback-invalid-scope")

    provider_error(WS + "flow8", "redirect_uri_mismatch")
    wait_for(lambda: b.h1() == "fakebox is not set up for this sign-in", "the redirect_uri_mismatch page")
    ref = b.text("#reference")
    check(len(ref) == 13, "no support reference")
    check(b.attr("#contact-support", "href").startswith("mailto:"), "no Contact support link")
    b.screenshot("callback-redirect-uri-mismatch")
    check(f"support reference {ref}" in d.gateway_log_path.read_text(), "the reference is not in the gateway's log")

    provider_error(WS + "flow9", "unauthorized_client")
    wait_for(lambda: b.h1() == "fakebox did not accept Ferrule's application", "the invalid_client page")
    check(b.text("#contact-support") == "Contact support", "no Contact support link")
    b.screenshot("callback-invalid-client")


def main() -> int:
    if not os.environ.get("FERRULE_TEST_PG_ADMIN_URL"):
        print("skipped: FERRULE_TEST_PG_ADMIN_URL is not set (scripts/test starts PostgreSQL and sets it)")
        return 77
    artifacts = Path(os.environ.get("FERRULE_BROWSER_ARTIFACTS") or "browser-artifacts").resolve()
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    d = b = None
    failed = False
    try:
        d = Deployment(artifacts)
        expired_link = d.link(ttl=30)
        expired_at = time.time() + 30
        b = Browser(artifacts)
        callback_pages(d, b)
        dashboard_flows(d, b, expired_link, expired_at)
        page = d.gateway_log_path.read_text()
        check("access_token" not in page and "fake-at-" not in page and "fake-code-" not in page,
              "the gateway's log holds a token or a code")
    except Exception:
        failed = True
        traceback.print_exc()
        if b:
            try:
                b.screenshot("failure")
                (artifacts / "failure.html").write_text(b.run("return document.documentElement.outerHTML;") or "")
            except Exception:
                pass
    finally:
        if b:
            b.close()
        if d:
            rc = d.close()
            if rc != 0:
                print(f"the gateway or the cluster did not stop cleanly (status {rc}); see {artifacts}")
                failed = True
    print(f"{'FAILED' if failed else 'ok'}; screenshots and logs in {artifacts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
