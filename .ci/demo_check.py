"""CI: the README's first command, as a new user runs it (`.ci/run` installs the package alone
in a fresh virtual environment, then runs this in place of `tmi-cluster demo`): the demo for a
bounded time, with assertions on what it printed and served, and nothing left behind.

Standard library only: the package's own dependencies are all the demo may need.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

JOIN_TIMEOUT_S = 240.0


def _fail(message: str, out: str) -> None:
    print(f"demo check failed: {message}\n--- what the demo printed ---\n{out[-4000:]}")
    sys.exit(1)


def main() -> None:
    script = shutil.which("tmi-cluster", path=str(Path(sys.executable).parent))
    assert script is not None, "tmi-cluster is not installed in this environment"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "demo.out"
        with log.open("w") as sink:
            demo = subprocess.Popen(  # noqa: S603 (our own script)
                [script, "demo"], stdout=sink, stderr=subprocess.STDOUT, cwd=tmp
            )
        began = time.monotonic()
        try:
            while not re.search(r"demo: (\d+) of \1 simulated channels joined", log.read_text()):
                if demo.poll() is not None:
                    _fail(f"it exited ({demo.returncode}) before all joined", log.read_text())
                if time.monotonic() - began > JOIN_TIMEOUT_S:
                    _fail(f"not every channel joined after {JOIN_TIMEOUT_S:g} s", log.read_text())
                time.sleep(0.5)
            joined_s = time.monotonic() - began
            out = log.read_text()
            shown = re.search(r"dashboard: (\S+)  \(sign in as admin, password (\S+)\)", out)
            if shown is None:
                _fail("no dashboard address and password printed", out)
            url, password = shown.groups()
            token = base64.b64encode(f"admin:{password}".encode()).decode()
            request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
            with urllib.request.urlopen(request, timeout=10) as page:  # noqa: S310 (loopback)
                if page.status != 200 or "tmi-cluster" not in page.read().decode():
                    _fail(f"the dashboard answered {page.status}", out)
            try:
                urllib.request.urlopen(url, timeout=10)  # noqa: S310
                _fail("the dashboard answered without the password", out)
            except urllib.error.HTTPError as error:
                if error.code != 401:
                    _fail(f"the dashboard answered {error.code} without the password", out)
            folder = Path(out.split("folder: ", 1)[1].split()[0])
            demo.send_signal(signal.SIGINT)
            stopping = time.monotonic()
            demo.wait(timeout=30)
            stopped_s = time.monotonic() - stopping
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
        out = log.read_text()
        if demo.returncode != 0 or not out.rstrip().endswith("demo stopped; nothing left behind"):
            _fail(f"it did not stop cleanly (exit {demo.returncode})", out)
        if folder.exists():
            _fail(f"its folder {folder} is left behind", out)
    print(
        f"demo check: every channel joined in {joined_s:.0f} s, the dashboard served behind its "
        f"password, stopped in {stopped_s:.1f} s, nothing left behind"
    )


if __name__ == "__main__":
    main()
