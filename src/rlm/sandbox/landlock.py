"""``RLM_SANDBOX=workspace``: Landlock confinement of a kernel or a bash command.

Landlock (Linux >= 5.13) lets an unprivileged process restrict itself and its future
children: here read and execute everywhere, write only in the given directories (the working
directory, the run directory with the kernel's private temp dir, ``/dev``), and with
``RLM_NETWORK=off`` no TCP bind or connect (ABI >= 4). It needs no root and no user
namespace, and unlike a seccomp socket filter it does not upset libzmq (kernels talk over ipc
sockets in the run directory).

A Landlock domain covers the calling thread and what it starts afterwards, so it is applied
where the process is still single-threaded: in a kernel forked from the zygote right after
the fork (:mod:`rlm.zygote.child`), and by ``python -m rlm.sandbox.launch`` for a kernel
started cold and for each bash command. The ABI is asked of the syscall
(``/sys/kernel/security`` is often not mounted in containers).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping, Sequence

__all__ = ["POLICY_VARS", "abi_version", "apply_from_env", "restrict"]

#: The environment variables a sandboxed process reads its policy from.
POLICY_VARS = ("RLM_SANDBOX", "RLM_SANDBOX_WRITABLE", "RLM_NETWORK")

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # execute .. make_sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall(number: int, *args: object) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(ctypes.c_long(number), *args))


def abi_version() -> int:
    """The Landlock ABI this kernel offers, 0 where there is none (or not Linux)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or not hasattr(os, "sched_getaffinity"):
        return 0
    version = _syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(version, 0)


def restrict(writable: Sequence[str], *, network: bool = True) -> int:
    """Confine this thread and its future children: read everywhere, write in ``writable``
    (directories that do not exist are skipped), no TCP when ``network`` is False and the ABI
    allows it. Returns the ABI used; raises ``OSError`` when Landlock is missing or refuses.
    """
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    fs = _FS_ABI1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    fs |= _IOCTL_DEV if abi >= 5 else 0
    attr = _RulesetAttr(handled_access_fs=fs)
    size = 8
    if abi >= 4 and not network:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = 24
    ruleset = _syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        read = _READ_FILE | _READ_DIR | _EXECUTE
        _add(add_rule, ruleset, "/", read)
        for path in writable:
            _add(add_rule, ruleset, path, fs)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def _add(add_rule: int, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_DIRECTORY)
    except OSError:
        return  # a writable directory that does not exist (yet) grants nothing
    try:
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        args = (ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule))
        if _syscall(add_rule, *args, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)


def apply_from_env(env: Mapping[str, str]) -> bool:
    """Apply the policy ``env`` describes (``RLM_SANDBOX=workspace``, or the Landlock layer of
    ``strict``); False when it asks for none. The writable directories are
    ``RLM_SANDBOX_WRITABLE`` (``os.pathsep`` separated) plus ``/dev``."""
    mode = env.get("RLM_SANDBOX", "off")
    if mode not in ("workspace", "strict"):
        return False
    writable = [p for p in env.get("RLM_SANDBOX_WRITABLE", "").split(os.pathsep) if p]
    if mode == "strict":
        # Inside bubblewrap (rlm.sandbox.bwrap), on top of its namespaces where the kernel
        # has Landlock: /tmp there is the sandbox's own empty tmpfs.
        if abi_version() < 1:
            return True
        writable.append("/tmp")
    restrict([*writable, "/dev"], network=env.get("RLM_NETWORK", "on") != "off")
    return True
