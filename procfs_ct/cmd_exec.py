"""`procfs-ct exec [--mount MNT | mount options] -- COMMAND...`: COMMAND sees the emulation at /proc.

Processes, and why there are three of ours:
  * the command process (in the host's mount namespace) makes a temporary directory,
    forks the supervisor, waits for it and removes the directory: it never enters the
    private namespace, so nothing it leaves behind can outlive the run;
  * the supervisor unshares a private mount namespace (private propagation: the host's
    mount table never changes) and there mounts a tmpfs over the temporary directory, a
    real procfs inside it, the emulated mount (unless --mount gave one), the conntrack
    and iptables wrappers and the /proc view, runs COMMAND, then takes it all down;
  * the view's FUSE daemon is a child of the supervisor: it must never read the /proc it
    serves, and the supervisor must stay free to wait for COMMAND.
When the last of them exits the namespace goes, and its mounts with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

from procfs_ct import nsutil

HELP = "Run COMMAND with the emulated files at their real /proc paths (a private mount namespace)."
EPILOG = """\
Inside, /proc is the real procfs with procfs-ct's files laid over it:
/proc/net/{ip,nf}_conntrack[_expect], /proc/net/stat/*, the same under /proc/<pid>/net,
and every conntrack knob under /proc/sys.  `conntrack` and `iptables`, `iptables-save`,
`iptables-restore` (on PATH and in /usr/sbin, also as iptables-legacy* and iptables-nft*
where the host has those) are `procfs-ct conntrack|iptables...` on the emulated mount.
The exit status is COMMAND's; processes it leaves running are stopped when it exits
(SIGTERM, then SIGKILL 2 s later).

Without --mount, a `procfs-ct mount` with the given options runs for the duration."""

# The `procfs-ct mount` options exec and shell accept and pass on when they start one.
MOUNT_OPTIONS = ("--source", "--profile", "--seed", "--max", "--buckets", "--state-file",
                 "--verbose", "--rules")
# The commands that speak to the emulation inside: on PATH and in the sbin directories.
TOOLS = ("conntrack", "iptables", "iptables-save", "iptables-restore")
# Other names of them, replaced where the host has them (iptables' two backends).
TOOL_ALIASES = {f"iptables-{backend}{suffix}": f"iptables{suffix}"
                for backend in ("legacy", "nft") for suffix in ("", "-save", "-restore")}
SBIN_DIRECTORIES = ("/usr/sbin", "/sbin")
STOP_SECONDS = 10.0                 # how long a daemon gets to stop before SIGKILL
STRAGGLER_SECONDS = 2.0             # how long COMMAND's leftovers get after SIGTERM
PREFIX = "procfs-ct-exec-"
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126     # as sh and env report them


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    """--mount MNT, or the options of `procfs-ct mount` to start one (declared there)."""
    from procfs_ct import cmd_mount
    parser.add_argument("--mount", metavar="MNT", default=None,
                        help="an existing procfs-ct mount to show (default: start one "
                             "for the duration, with the options below)")
    donor = argparse.ArgumentParser(add_help=False)
    cmd_mount.add_arguments(donor)
    group = parser.add_argument_group("options of the procfs-ct mount started without --mount")
    for action in donor._actions:
        if action.option_strings and action.option_strings[0] in MOUNT_OPTIONS:
            group._add_action(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_mount_arguments(parser)
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]",
                        help="the program to run and its arguments")


def mount_argv(args: argparse.Namespace) -> List[str]:
    """The options given on our command line, as `procfs-ct mount` arguments."""
    from procfs_ct import cmd_mount
    donor = argparse.ArgumentParser(add_help=False)
    cmd_mount.add_arguments(donor)
    argv: List[str] = []
    for action in donor._actions:
        if not action.option_strings or action.option_strings[0] not in MOUNT_OPTIONS:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(action.option_strings[0])
        else:
            argv += [action.option_strings[0], str(value)]
    return argv


def _usage_error(message: str) -> Exception:
    from procfs_ct.errors import UsageError
    return UsageError(message)


def check_emulated_mount(path: str) -> str:
    mnt = os.path.abspath(path)
    if not (os.path.exists(os.path.join(mnt, "net/nf_conntrack"))
            and os.path.isdir(os.path.join(mnt, "sys/net"))):
        raise _usage_error(f"--mount {path}: not a procfs-ct mount (no net/nf_conntrack)")
    return mnt


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise _usage_error("no COMMAND given (procfs-ct exec [OPTIONS] -- COMMAND [ARGS...])")
    return run_inside(args, argv)


def run_inside(args: argparse.Namespace, argv: List[str]) -> int:
    """Run argv in a private namespace whose /proc is the view; its exit status."""
    if os.geteuid() != 0:
        raise _usage_error("needs root (a mount namespace, a procfs and FUSE over /proc)")
    emulated = check_emulated_mount(args.mount) if args.mount else None
    extra = mount_argv(args)
    if args.mount and extra:
        raise _usage_error(f"{extra[0]}: a mount option, but --mount names an existing mount")
    workdir = tempfile.mkdtemp(prefix=PREFIX)
    os.chmod(workdir, 0o755)
    try:
        supervisor = os.fork()
        if supervisor == 0:
            status = 1
            try:
                status = Supervisor(workdir, emulated, extra).run(argv)
            except SystemExitMessage as exc:
                print(exc, file=sys.stderr)
                status = exc.status
            except BaseException as exc:        # noqa: B902 - a child must never return
                print(f"procfs-ct exec: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        return _wait_forwarding(supervisor)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_forwarding(pid: int) -> int:
    """waitpid, passing SIGTERM/SIGHUP on to `pid` and leaving ^C to the foreground
    group (COMMAND gets it; we must live to clean up)."""
    def forward(sig: int, frame: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old[signal.SIGQUIT] = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                return exit_code(status)
            except InterruptedError:
                continue
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Supervisor:
    """Runs in the forked child: builds the namespace, runs COMMAND, takes it down."""

    def __init__(self, workdir: str, emulated: Optional[str], mount_args: List[str]) -> None:
        self.workdir = workdir
        self.real = os.path.join(workdir, "proc")
        self.bin = os.path.join(workdir, "bin")
        self.emulated = emulated
        self.mount_args = mount_args
        self.emulated_pid: Optional[int] = None
        self.view_pid: Optional[int] = None

    def run(self, argv: List[str]) -> int:
        # A SIGTERM/SIGHUP before COMMAND runs (or after) unwinds through _stop(): the
        # daemons must not outlive us, or the command process would remove the directory
        # under their mounts and leave them waiting forever.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_terminated)
        nsutil.become_subreaper()           # COMMAND's orphans are ours to stop and reap
        nsutil.private_mount_namespace()
        nsutil.mount("tmpfs", self.workdir, "tmpfs", nsutil.MS_NOSUID | nsutil.MS_NODEV,
                     "mode=755")
        os.mkdir(self.real)
        nsutil.mount("proc", self.real, "proc",
                     nsutil.MS_NOSUID | nsutil.MS_NODEV | nsutil.MS_NOEXEC)
        try:
            if self.emulated is None:
                self.emulated = self._start_emulated_mount()
            self._install_tools()
            self._start_view()
            return self._run_command(argv)
        finally:
            self._stop()

    # -- the emulated mount ---------------------------------------------------------------------
    def _start_emulated_mount(self) -> str:
        mnt = os.path.join(self.workdir, "ct")
        os.mkdir(mnt)
        pid_file = os.path.join(self.workdir, "ct.pid")
        log_file = os.path.join(self.workdir, "ct.log")
        cmd = procfs_ct_argv() + ["mount", mnt, "--pid-file", pid_file,
                                  "--log-file", log_file] + self.mount_args
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            message = done.stderr.strip().replace("procfs-ct mount:", "procfs-ct exec:")
            if os.path.exists(log_file):
                with open(log_file) as f:
                    message += "\n" + f.read().strip()
            raise SystemExitMessage(message, done.returncode)
        with open(pid_file) as f:
            self.emulated_pid = int(f.read())
        return mnt

    # -- conntrack and iptables -------------------------------------------------------------------
    def _install_tools(self) -> None:
        """conntrack and iptables[-save|-restore] run `procfs-ct conntrack|iptables...` against
        the emulated mount: first on PATH, and in /usr/sbin (and /sbin where it is a directory
        of its own), so that a script calling `/usr/sbin/iptables` by its absolute path, as
        the tutorial's rc.firewall does, runs unchanged."""
        os.mkdir(self.bin)
        scripts = {name: tool_wrapper(name, ["--mount", self.emulated] if name != "conntrack"
                                      else []) for name in TOOLS}
        for name, script in scripts.items():
            _write_executable(os.path.join(self.bin, name), script)
        os.environ["PATH"] = self.bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        for index, sbin in enumerate(_sbin_directories()):
            # An overlay (upper layer in our tmpfs, seen only in this namespace) takes files
            # the host may lack and replaces symlinks (iptables -> /etc/alternatives/... ->
            # xtables-*-multi) by name: a bind would land on the multi-call binary they share.
            upper, work = (os.path.join(self.workdir, f"sbin{index}{part}")
                           for part in ("", ".work"))
            os.mkdir(upper)
            os.mkdir(work)
            nsutil.mount("overlay", sbin, "overlay", 0,
                         f"lowerdir={sbin},upperdir={upper},workdir={work}")
            for name in TOOLS + tuple(n for n in TOOL_ALIASES if os.path.lexists(
                    os.path.join(sbin, n))):
                path = os.path.join(sbin, name)
                if os.path.lexists(path):
                    os.unlink(path)         # the symlink itself (a whiteout in the upper layer)
                _write_executable(path, scripts[TOOL_ALIASES.get(name, name)])

    # -- the /proc view -----------------------------------------------------------------------
    def _start_view(self) -> None:
        from procfs_ct.fuse_compat import FUSE
        from procfs_ct.procview import ProcView, view_mount_options

        operations = ProcView(self.real, self.emulated)      # walks the emulated tree now
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            status = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)    # ^C is for COMMAND
                operations._on_ready = lambda: os.write(ready_w, b"ok")
                FUSE(operations, "/proc", **view_mount_options())
            except BaseException as exc:                   # noqa: B902 - child must exit
                print(f"procfs-ct exec: the /proc view stopped: {exc!r}", file=sys.stderr)
                status = 1
            finally:
                os._exit(status)
        self.view_pid = pid
        os.close(ready_w)
        answer = os.read(ready_r, 16)
        os.close(ready_r)
        if answer != b"ok":
            raise SystemExitMessage("procfs-ct exec: the /proc view did not mount", 1)

    # -- COMMAND -------------------------------------------------------------------------------
    def _run_command(self, argv: List[str]) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        child = os.fork()
        if child == 0:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            try:
                os.execvp(argv[0], argv)
            except OSError as exc:
                print(f"procfs-ct exec: {argv[0]}: {exc.strerror}", file=sys.stderr)
                sys.stderr.flush()
                os._exit(EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError)
                         else EXIT_NOT_EXECUTABLE)
        return _wait_forwarding(child)

    # -- teardown --------------------------------------------------------------------------------
    def _stop(self) -> None:
        self._stop_stragglers()
        if self.view_pid is not None:
            try:
                nsutil.umount_lazy("/proc")        # the view's FUSE loop ends: ENODEV
            except OSError as exc:
                print(f"procfs-ct exec: {exc}", file=sys.stderr)
            _reap(self.view_pid)
        if self.emulated_pid is not None:
            _stop_daemon(self.emulated_pid)
        _reap_orphans()


    def _stop_stragglers(self) -> None:
        """Stop what COMMAND left running in our namespace (background jobs, daemons):
        SIGTERM, then SIGKILL after STRAGGLER_SECONDS.  They would otherwise keep the
        namespace alive with a /proc that no longer answers."""
        ours = {os.getpid(), self.view_pid, self.emulated_pid}
        try:
            namespace = os.readlink(os.path.join(self.real, "self/ns/mnt"))
        except OSError:
            return

        def stragglers() -> List[int]:
            found = []
            for name in os.listdir(self.real):
                if not name.isdigit() or int(name) in ours:
                    continue
                try:
                    if os.readlink(os.path.join(self.real, name, "ns/mnt")) != namespace:
                        continue
                    with open(os.path.join(self.real, name, "stat")) as f:
                        fields = f.read().rsplit(") ", 1)[1].split()
                except (OSError, IndexError):
                    continue                    # gone meanwhile
                # the emulated mount's auto_unmount helper goes with its daemon
                if fields[0] != "Z" and int(fields[1]) != self.emulated_pid:
                    found.append(int(name))
            return found

        for sig, wait in ((signal.SIGTERM, STRAGGLER_SECONDS), (signal.SIGKILL, STOP_SECONDS)):
            left = stragglers()
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while left and time.monotonic() < deadline:
                time.sleep(0.02)
                _reap_orphans()
                left = stragglers()
            if not left:
                return


class Terminated(Exception):
    """SIGTERM or SIGHUP reached the supervisor while no COMMAND was running."""


def _raise_terminated(sig: int, frame: object) -> None:
    raise Terminated(f"stopped by {signal.Signals(sig).name}")


class SystemExitMessage(Exception):
    """The supervisor cannot go on: a message for stderr and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _reap_orphans() -> None:
    """Collect exited children that are not waited for elsewhere (orphans adopted as
    subreaper); the daemons we wait for by pid are never among them once they exit."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap(pid: int) -> None:
    """Wait for our child, killing it if it will not stop by itself."""
    deadline = time.monotonic() + STOP_SECONDS
    try:
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:
        return                          # already collected


def _stop_daemon(pid: int) -> None:
    """SIGTERM a daemon that is not our child (it double-forked) and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().rsplit(") ", 1)[-1].startswith("Z")
    except OSError:
        return False


def procfs_ct_argv() -> List[str]:
    """How to run this installation's `procfs-ct` (the same Python, the same package)."""
    return [sys.executable, "-c", "import sys; from procfs_ct.cli import main; sys.exit(main())"]


def tool_wrapper(command: str, first: Sequence[str] = ()) -> str:
    """The script installed as COMMAND (conntrack, iptables...): `procfs-ct COMMAND
    [FIRST...]` with the same arguments."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python = shlex.quote(sys.executable)
    return ("#!/bin/sh\n"
            f"# procfs-ct exec: {command} speaks to the emulated mount, never to the host's kernel.\n"
            f"PYTHONPATH={shlex.quote(package_parent)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
            "export PYTHONPATH\n"
            f"exec {python} -c 'import sys; from procfs_ct.cli import main; "
            f"sys.exit(main({json.dumps([command, *first])} + sys.argv[1:]))' \"$@\"\n")


def _write_executable(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def _sbin_directories() -> List[str]:
    """/usr/sbin, and /sbin unless it is the same directory (a merged /usr)."""
    found: List[str] = []
    for path in SBIN_DIRECTORIES:
        if os.path.isdir(path) and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found
