"""The connector's run processes: ``dagster job execute`` (in-process executor: one process per run, so a
SIGKILL kills the whole run) and ``dagster-daemon run`` (the webhook sensor), each in its own process
group with its output in a log file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
DEFINITIONS = "coupa_d365_pipeline.definitions"
IN_PROCESS = "execution:\n  config:\n    in_process: {}\n"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
WORKSPACE = (
    f"load_from:\n  - python_module:\n      module_name: {DEFINITIONS}\n      location_name: coupa_d365_pipeline\n"
)


@dataclass
class RunProcess:
    name: str
    job: str
    proc: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    killed: bool = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self.ended = self.ended or time.monotonic()
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group and return once none of it is left (power loss, not a cancel)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.ended = time.monotonic()
        self.killed = True
        deadline = time.monotonic() + 30
        while True:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the killed run {self.name} are still alive")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM the process group (the daemon and the runs it launched), SIGKILL after 30 s."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.ended = time.monotonic()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def wall_s(self) -> float:
        return round((self.ended or time.monotonic()) - self.started, 2)


class Launcher:
    """Starts run processes with one environment (sandboxes, DAGSTER_HOME, sync DB) and numbered logs."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "in_process.yaml"
        self.config.write_text(IN_PROCESS)
        self._count = 0

    def _start(self, name: str, job: str, args: list[str], extra_env: dict[str, str] | None) -> RunProcess:
        self._count += 1
        log = self.logs / f"{self._count:02d}-{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                args,
                env={**self.env, **(extra_env or {})},
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: SIGKILL reaches every process of the run
            )
        return RunProcess(name, job, proc, log)

    def job(self, name: str, job: str, partition_range: tuple[str, str] | None = None, **extra_env: str) -> RunProcess:
        tags = {RANGE_START: partition_range[0], RANGE_END: partition_range[1]} if partition_range else {}
        args = [str(BIN / "dagster"), "job", "execute", "-m", DEFINITIONS, "-j", job, "-c", str(self.config)]
        if tags:
            args += ["--tags", json.dumps(tags)]
        return self._start(name, job, args, extra_env)

    def daemon(self, dagster_home: Path) -> RunProcess:
        """``dagster-daemon run`` on its own instance (``dagster_home``): the runs SIGKILLed on the CLI's
        instance stay STARTED there (nothing monitors a ``dagster job execute`` process) and would hold
        the queue's run slots forever. The sync database and the sandboxes are shared."""
        workspace = self.workdir / "workspace.yaml"
        workspace.write_text(WORKSPACE)
        args = [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]
        return self._start("daemon", "dagster-daemon", args, {"DAGSTER_HOME": str(dagster_home)})
