"""Open a page in headless Chromium over the DevTools protocol and report what a person would see.

Debian's ``chromium`` is started with a fresh profile and every background service off; the
page is driven over the Chrome DevTools protocol (``websocket-client``). Every request the page
makes passes through ``Fetch`` interception: ``file://`` ones continue, anything else is failed
and recorded, so a page that would fetch from the network is caught even offline. Console
messages, exceptions and log entries of level error are collected, the layout width at a laptop
viewport is measured, and a screenshot is taken.

    python3 -m tests.browser report.html --screenshot shot.png [--full | --scroll PIXELS]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--remote-debugging-port=0", "--remote-allow-origins=*"]
LAPTOP = (1366, 768)


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    blocked: list[str] = field(default_factory=list)  # those that would have left file://
    scroll_width: int = 0
    viewport_width: int = 0
    body_font_px: float = 0.0
    title: str = ""
    text_chars: int = 0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A minimal DevTools client: one websocket, numbered commands, events queued."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def send(self, method: str, **params: object) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.on_event(msg)

    def on_event(self, msg: dict) -> None:
        self.events.append(msg)

    def wait(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.on_event(json.loads(self.ws.recv()))
        raise TimeoutError(method)


def check_page(html: str, screenshot: str | None = None, full: bool = False, timeout: float = 60.0,
               scroll: int = 0) -> PageCheck:
    exe = chromium()
    if not exe:
        raise FileNotFoundError("chromium is not installed (scripts/install.sh installs it)")
    profile = tempfile.mkdtemp(prefix="nl-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.05)
        with open(port_file) as f:
            port = int(f.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        return _drive(DevTools(page["webSocketDebuggerUrl"]), html, screenshot, full, scroll)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _drive(dt: DevTools, html: str, screenshot: str | None, full: bool, scroll: int = 0) -> PageCheck:
    res = PageCheck()

    def on_event(msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Fetch.requestPaused":
            url = p["request"]["url"]
            res.requests.append(url)
            if url.startswith("file://"):
                dt.ws.send(json.dumps({"id": 0, "method": "Fetch.continueRequest", "params": {"requestId": p["requestId"]}}))
            else:
                res.blocked.append(url)
                dt.ws.send(json.dumps({"id": 0, "method": "Fetch.failRequest",
                                       "params": {"requestId": p["requestId"], "errorReason": "BlockedByClient"}}))
            return
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            res.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Runtime.exceptionThrown":
            res.console_errors.append(p["exceptionDetails"].get("text", "exception"))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            res.console_errors.append(p["entry"]["text"])
        DevTools.on_event(dt, msg)

    dt.on_event = on_event  # type: ignore[method-assign]
    for domain in ("Runtime", "Log", "Page"):
        dt.send(f"{domain}.enable")
    dt.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
    dt.send("Emulation.setDeviceMetricsOverride", width=LAPTOP[0], height=LAPTOP[1], deviceScaleFactor=1, mobile=False)
    dt.send("Page.navigate", url="file://" + os.path.abspath(html))
    dt.wait("Page.loadEventFired")
    time.sleep(0.3)  # late console messages

    def js(expr: str) -> object:
        return dt.send("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    res.scroll_width = int(js("document.documentElement.scrollWidth"))
    res.viewport_width = int(js("window.innerWidth"))
    res.body_font_px = float(js("parseFloat(getComputedStyle(document.body).fontSize)"))
    res.title = str(js("document.title"))
    res.text_chars = int(js("document.body.innerText.length"))
    if screenshot:
        if scroll:
            js(f"window.scrollTo(0, {int(scroll)})")
        shot = dt.send("Page.captureScreenshot", format="png", captureBeyondViewport=full)
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    dt.ws.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html")
    ap.add_argument("--screenshot")
    ap.add_argument("--full", action="store_true", help="the whole page, not the first laptop screen")
    ap.add_argument("--scroll", type=int, default=0, help="scroll this many pixels down first")
    a = ap.parse_args()
    r = check_page(a.html, a.screenshot, a.full, scroll=a.scroll)
    print(json.dumps(r.__dict__, indent=1))
    return 0 if not (r.console_errors or r.blocked) else 1


if __name__ == "__main__":
    sys.exit(main())
