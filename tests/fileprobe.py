"""Run file operations on /proc-shaped files and print what each returned, as JSON.

The same script runs twice on one list of cases: in a network namespace against the
kernel's /proc (`ip netns exec NS python3 fileprobe.py /proc`) and against a procfs-ct
mount (`python3 fileprobe.py MNT`), so both sides see the very same system calls.
Cases come as JSON on stdin, results go to stdout; nothing here imports the project.

A case: {"path": "sys/net/...", "flags": ["O_WRONLY", ...], "ops": [[op, args...], ...],
         "reset": "TEXT" or null, "readback": true}
  reset     written (open O_WRONLY, one write, close) before the case, and again after it
  ops       write HEX | pwrite HEX OFFSET | lseek OFFSET | read SIZE | pread SIZE OFFSET |
            reads SIZE N (N successive reads) | sendfile SIZE | copy_file_range SIZE |
            copyfile | mmap private|shared | size (fstat's st_size) | ftruncate LENGTH |
            fsync
  readback  the value read back (fresh open, one read) after the ops
Each op answers its return value (int), the bytes read (as latin-1 text), or "E<NAME>".
"""
from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import shutil
import signal
import sys
import tempfile

FLAGS = {name: getattr(os, name) for name in
         ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_APPEND", "O_TRUNC", "O_DIRECT")}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
MAP_FAILED = ctypes.c_void_p(-1).value


def err_name(exc: OSError) -> str:
    return "E" + errno.errorcode.get(exc.errno, str(exc.errno))[1:]


def read_value(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode("latin-1")
    finally:
        os.close(fd)


def write_value(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode("latin-1"))
    finally:
        os.close(fd)


def first_byte_of_mapping(address: int) -> str:
    """Touch the mapping in a child: the byte it reads, or the signal that killed it."""
    pid = os.fork()
    if pid == 0:                                    # child: touch, report by exit code
        try:
            byte = ctypes.string_at(address, 1)
            os._exit(byte[0] if byte[0] else 0)
        finally:
            os._exit(255)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return f"byte {os.WEXITSTATUS(status)}"


def do_mmap(fd: int, kind: str) -> object:
    share = mmap.MAP_PRIVATE if kind == "private" else mmap.MAP_SHARED
    address = _libc.mmap(None, 4096, mmap.PROT_READ, share, fd, 0)
    if address == MAP_FAILED or address is None:
        return "E" + errno.errorcode[ctypes.get_errno()][1:]
    try:
        return "mapped, " + first_byte_of_mapping(address)
    finally:
        _libc.munmap(address, 4096)


def copy_out(fd: int, op: str, size: int, scratch: str) -> object:
    out = os.open(scratch, os.O_RDWR | os.O_TRUNC)
    try:
        if op == "sendfile":
            count = os.sendfile(out, fd, None, size)
        else:
            count = os.copy_file_range(fd, out, size)
        os.lseek(out, 0, os.SEEK_SET)
        return [count, os.read(out, 65536).decode("latin-1")]
    finally:
        os.close(out)


def run_op(fd: int, op: list, path: str, scratch: str) -> object:
    name, args = op[0], op[1:]
    if name == "write":
        return os.write(fd, bytes.fromhex(args[0]))
    if name == "pwrite":
        return os.pwrite(fd, bytes.fromhex(args[0]), args[1])
    if name == "lseek":
        return os.lseek(fd, args[0], os.SEEK_SET)
    if name == "read":
        return os.read(fd, args[0]).decode("latin-1")
    if name == "pread":
        return os.pread(fd, args[0], args[1]).decode("latin-1")
    if name == "reads":
        return [os.read(fd, args[0]).decode("latin-1") for _ in range(args[1])]
    if name in ("sendfile", "copy_file_range"):
        return copy_out(fd, name, args[0], scratch)
    if name == "copyfile":
        shutil.copyfile(path, scratch)
        with open(scratch, "rb") as copied:
            return copied.read().decode("latin-1")
    if name == "mmap":
        return do_mmap(fd, args[0])
    if name == "size":
        return os.fstat(fd).st_size
    if name == "ftruncate":
        os.ftruncate(fd, args[0])
        return 0
    if name == "fsync":
        os.fsync(fd)
        return 0
    raise ValueError(f"unknown op {name!r}")


def run_case(root: str, case: dict, scratch: str) -> dict:
    path = os.path.join(root, case["path"])
    try:
        return _run_case(path, case, scratch)
    except OSError as exc:                          # the reset or the read-back failed
        return {"failed": err_name(exc)}


def _run_case(path: str, case: dict, scratch: str) -> dict:
    if case.get("reset") is not None:
        write_value(path, case["reset"])
    result: dict = {"ops": []}
    flags = 0
    for flag in case["flags"]:
        flags |= FLAGS[flag]
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        result["open"] = err_name(exc)
    else:
        result["open"] = "ok"
        try:
            for op in case["ops"]:
                try:
                    result["ops"].append(run_op(fd, op, path, scratch))
                except OSError as exc:
                    result["ops"].append(err_name(exc))
        finally:
            os.close(fd)
    if case.get("readback"):
        result["value"] = read_value(path)
    if case.get("reset") is not None:
        write_value(path, case["reset"])
    return result


def main() -> int:
    root = sys.argv[1]
    cases = json.load(sys.stdin)
    handle, scratch = tempfile.mkstemp(prefix="pctf-probe-")
    os.close(handle)
    try:
        json.dump([run_case(root, case, scratch) for case in cases], sys.stdout)
    finally:
        os.unlink(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
