"""PID 1 inside the test VM (see tests/vm/vm.py): load modules, run pytest, report, reboot.

Runs with the project's venv python from the read-only host root share.
Reads ``job.json`` from the writable output share (argv[1]) and writes
``pytest.log``, the junit XML pytest is told to write, and ``result.json``
there; any error of its own goes to ``guest-error.txt``. As PID 1 it also
reaps every orphan (daemonised wireguard-go, ...), so exited processes do not
linger as zombies the tests would see. Standard library only.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def say(text: str) -> None:
    with open("/dev/console", "w") as console:
        console.write(f"wgpt-vm: {text}\n")


def prepare(job: dict[str, object]) -> list[str]:
    """Modules and device nodes; returns the modules that loaded."""
    loaded = []
    for module in job["modules"]:  # type: ignore[attr-defined]
        proc = subprocess.run(
            ["modprobe", module], capture_output=True, text=True, env={"PATH": PATH}, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"modprobe {module} failed: {proc.stderr.strip()}")
        loaded.append(module)
    if not os.path.exists("/dev/net/tun"):
        os.makedirs("/dev/net", exist_ok=True)
        os.mknod("/dev/net/tun", 0o20666, os.makedev(10, 200))
    os.makedirs("/tmp/home", mode=0o700, exist_ok=True)
    os.makedirs("/run/wireguard", exist_ok=True)
    os.makedirs("/run/netns", exist_ok=True)
    os.makedirs("/dev/shm", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/dev/shm"], check=False)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, env={"PATH": PATH})
    return loaded


def run_pytest(job: dict[str, object], out: Path) -> int | None:
    """pytest as a child; reap everything until it exits or the deadline passes."""
    env = {
        "PATH": PATH,
        "HOME": "/tmp/home",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": "/tmp",
    }
    args = [sys.executable, "-B", "-m", "pytest", *job["pytest_args"]]  # type: ignore[misc]
    with (out / "pytest.log").open("w") as log:
        proc = subprocess.Popen(
            args, cwd=str(job["repo"]), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + float(job["timeout"])  # type: ignore[arg-type]
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == proc.pid:
                return os.waitstatus_to_exitcode(status)
            if pid == 0:
                if time.monotonic() > deadline:
                    # SIGINT first: pytest then still writes its junit XML.
                    log.write(f"\nwgpt-vm: pytest interrupted after {job['timeout']}s\n")
                    log.flush()
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    return None
                time.sleep(0.1)


def main() -> None:
    out = Path(sys.argv[1])
    result: dict[str, object] = {}
    try:
        say("guest running")
        job = json.loads((out / "job.json").read_text())
        result["uname"] = platform.release()
        result["modules"] = prepare(job)
        say("modules loaded; running pytest")
        start = time.monotonic()
        result["pytest_exit"] = run_pytest(job, out)
        result["pytest_seconds"] = round(time.monotonic() - start, 1)
        (out / "result.json").write_text(json.dumps(result, indent=2))
        say(f"pytest exited {result['pytest_exit']}")
    except BaseException:
        text = traceback.format_exc()
        try:
            (out / "guest-error.txt").write_text(text)
            say("FAILED: " + text.strip().splitlines()[-1])
        except BaseException:
            pass
    finally:
        os.sync()
        with open("/proc/sysrq-trigger", "w") as trigger:
            trigger.write("b")  # qemu runs with -no-reboot: the VM ends here
        time.sleep(60)


if __name__ == "__main__":
    main()
