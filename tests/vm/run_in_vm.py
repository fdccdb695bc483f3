#!/usr/bin/env python3
"""Run one command inside a throw-away QEMU VM that boots the host's Debian kernel.

Why: the kernel this project is developed on may lack SCTP (``socket(AF_INET,
SOCK_STREAM, IPPROTO_SCTP)`` fails with EPROTONOSUPPORT) and netem.  Debian's stock kernel
(package linux-image-amd64) has both as modules, so we boot it under QEMU and run the
command there, on the host's own files (Python, venv, checkout), with real kernel SCTP.

Usage::

    python tests/vm/run_in_vm.py [--timeout S] [--share DIR ...] [--cwd DIR]
                                 [--env NAME[=VALUE] ...] [-v] -- COMMAND [ARGS...]
    python tests/vm/run_in_vm.py --check      # exit 0 if the VM can run here, else 1

Exit status: COMMAND's (125 if --cwd does not exist in the guest, 127 if COMMAND is not
found), 97 if the VM died or timed out without reporting one, 130 if interrupted.
Needs: qemu-system-x86 (qemu-system-x86_64), linux-image-amd64, busybox-static, kmod.

Theory of operation
-------------------
Host side (this script, standard library only):

1. Pick the newest ``/boot/vmlinuz-<ver>`` that has a matching ``/lib/modules/<ver>``.
2. Build, once, in the cache ``$XDG_CACHE_HOME/trio-sctls-vm/<ver>/`` (by default
   ``~/.cache/trio-sctls-vm/<ver>/``):

   * ``initramfs-<hash>.cpio``: an uncompressed newc cpio holding the static busybox,
     the ``/init`` script (INIT_SCRIPT below) and the modules virtio_pci, 9pnet_virtio,
     9p, virtio_console, sctp, sch_netem (and virtio_rng) with their dependencies in
     load order, as ``modprobe -S <ver> --show-depends`` lists them (soft dependencies
     such as crc32c included).  Compressed modules (.ko.xz/.gz/.zst) are decompressed
     here, so busybox's insmod never sees them, and their signatures are stripped
     (checking them costs about 50 ms per module under emulation; the kernel does not
     enforce them unless built with CONFIG_MODULE_SIG_FORCE, in which case we keep them).
   * ``vmlinux-<hash>``: the ELF kernel unpacked from the bzImage, which QEMU boots
     directly through its PVH entry point: this skips the kernel's own xz decompressor,
     which takes about 4 s under emulation.  Without a PVH note, the bzImage is booted.

   The hashes cover the inputs (file sizes and times) and the source of the build code
   itself, so editing the recipe rebuilds.  Files are written under a temporary name and
   renamed into place, so concurrent runs never see a partial file.
3. Write a per-run ``job.sh`` into a fresh host temp dir (the *results* share), then boot
   ``qemu-system-x86_64 -machine q35 -accel tcg -cpu qemu64 -m 1024 -smp 1`` (KVM hangs
   on the machines this was written on; q35 probes virtio PCI devices about 1 s faster
   than the default i440fx machine; a second vCPU made things slower on 2 host cores),
   with ``-no-reboot`` and ``panic=-1`` so that a guest crash ends QEMU.
   virtio-9p shares: the host's ``/`` read-only (tag ``hostroot``), the results dir
   read-write (tag ``results``), and directories read-write at the *same absolute path*
   in the guest (tags ``share0``...): each ``--share DIR``, the git checkout holding this
   script, and, when they live under /tmp, sys.prefix, the venv of an absolute COMMAND
   and the working directory.  Shares are needed because the guest mounts a tmpfs on
   /tmp (hiding the host's /tmp, where CI may clone the project) and because the root
   share is read-only.  Other files under /tmp (a script passed as an argument, say) need
   an explicit ``--share``.
4. The command's stdout and stderr travel over two virtio-serial ports (named stdout and
   stderr) to two pipes of this process and are copied live to our stdout and stderr,
   byte for byte (PYTHONUNBUFFERED=1 keeps Python output live).  The kernel's serial
   console (ttyS0, ``quiet loglevel=3``) goes to QEMU's stdout, which we read but only
   show with ``--verbose``; init's own ``run_in_vm:`` messages are always shown, and the
   last console lines are shown if the VM ends without a status (a kernel panic, say).
5. When QEMU exits, read ``status`` from the results dir and exit with it.  No status
   means exit 97 with a message.  The timeout (default 600 s), Ctrl-C and SIGTERM kill
   QEMU, which also gets SIGKILL if this script dies (PR_SET_PDEATHSIG).

Guest side (``/init``, busybox sh as PID 1): mount proc, sys, devtmpfs; insmod the
modules; bring ``lo`` up; mount the results share on /results and the host's / on
/newroot (9p, read-only, cache=loose); mount proc, sys, dev, dev/pts, dev/shm and a tmpfs
/tmp under /newroot; source ``/results/job.sh``, which mounts the shares under /newroot
and sets the command line ``env -i ENV... chroot /newroot /bin/sh -c 'cd CWD && exec
COMMAND'``; run it with stdin from /dev/null and stdout/stderr on the virtio ports; write
its exit status to ``/results/status``; ``sync; poweroff -f``.  The command runs as root
with PATH (the caller's), HOME=/root (read-only), LANG=C.UTF-8, PYTHONDONTWRITEBYTECODE=1,
PYTHONUNBUFFERED=1, TRIO_SCTLS_IN_VM=1, TMPDIR=/tmp and the ``--env`` settings.

Everything runs under TCG emulation: booting takes about 4 s, Python runs about 10 to 20
times slower than on the host and OpenSSL's AES about 200 times slower, so run few, small
tests, all in one boot.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import hashlib
import inspect
import io
import lzma
import os
import re
import selectors
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO

#: Bump to force a rebuild of cached files when something the hashes miss changes.
RECIPE_VERSION = 1
#: Exit status when the VM could not produce the command's status.
EXIT_VM_FAILURE = 97
EXIT_INTERRUPTED = 130

QEMU = "qemu-system-x86_64"
REQUIRED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "virtio_console", "sctp", "sch_netem")
OPTIONAL_MODULES = ("virtio_rng",)
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
CONSOLE_TAIL_LINES = 60
MSG_PREFIX = b"run_in_vm: "
ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|c)")
MODULE_SIG_MAGIC = b"~Module signature appended~\n"
MARK_PREFIX = b"run_in_vm-mark: "
#: Directories the guest mounts over (so the host's contents there are hidden).
HIDDEN_IN_GUEST = (Path("/tmp"), Path("/proc"), Path("/sys"), Path("/dev"))

NINEP_OPTS = "trans=virtio,version=9p2000.L,msize=262144"

INIT_SCRIPT = r"""#!/bin/busybox sh
# PID 1 of the run_in_vm.py guest; see the docstring of tests/vm/run_in_vm.py.
/bin/busybox --install -s /bin
PATH=/bin
export PATH
say() { echo "run_in_vm: $*"; }
mark() { echo "run_in_vm-mark: $*"; }
halt_vm() { sync; poweroff -f; reboot -f; sleep 10; }
die() { say "$*"; halt_vm; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mark init
while read -r m; do insmod "/modules/$m" 2>/dev/null; done < /modules/order
mark modules
for m in $(cat /modules/required); do
    [ -d "/sys/module/$m" ] || say "warning: kernel module $m did not load"
done
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
p9='@NINEP_OPTS@'
mount -t 9p -o "$p9" results /results || die "cannot mount the results share"
mount -t 9p -o "$p9,ro,cache=loose" hostroot /newroot || die "cannot mount the host's /"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mark mounted
share() {
    mkdir -p "/newroot$2" 2>/dev/null
    mount -t 9p -o "$p9" "$1" "/newroot$2" || die "cannot mount the share $2"
}
out=/dev/console
err=/dev/console
for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    case "$(cat "$p/name")" in
        stdout) out="/dev/${p##*/}" ;;
        stderr) err="/dev/${p##*/}" ;;
    esac
done
. /results/job.sh
mark start
"$@" </dev/null >"$out" 2>"$err"
rc=$?
mark done
echo "$rc" > /results/status.tmp && mv /results/status.tmp /results/status
halt_vm
""".replace("@NINEP_OPTS@", NINEP_OPTS)


class VMError(Exception):
    """The VM cannot be prepared or run here."""


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path
    modules_dir: Path


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", version)]


def find_kernel() -> Kernel:
    """The newest /boot/vmlinuz-* that has a /lib/modules/<version> directory."""
    found: list[Kernel] = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        for base in (Path("/lib/modules"), Path("/usr/lib/modules")):
            if (base / version / "modules.dep").is_file():
                found.append(Kernel(version, image, base / version))
                break
    if not found:
        raise VMError(
            "no /boot/vmlinuz-<ver> with a matching /lib/modules/<ver> "
            "(apt-get install linux-image-amd64)"
        )
    return max(found, key=lambda k: _version_key(k.version))


def _is_static_elf(path: Path) -> bool:
    """True if ``path`` is a 64-bit ELF executable without a PT_INTERP (dynamic loader)."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:
            return False
        endian = "<" if header[5] == 1 else ">"
        (phoff,) = struct.unpack_from(endian + "Q", header, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path.resolve()):
            return path.resolve()
    raise VMError("no statically linked busybox found (apt-get install busybox-static)")


def find_qemu() -> str:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise VMError(f"{QEMU} not found (apt-get install qemu-system-x86)")
    return qemu


def module_files(kernel: Kernel, name: str) -> list[Path]:
    """``name`` and its dependencies, in load order, as ``modprobe --show-depends`` says."""
    modprobe = shutil.which("modprobe") or next(
        (p for p in ("/sbin/modprobe", "/usr/sbin/modprobe") if os.access(p, os.X_OK)), None
    )
    if modprobe is None:
        raise VMError("modprobe not found (apt-get install kmod)")
    proc = subprocess.run(
        [
            modprobe,
            "-S",
            kernel.version,
            "-d",
            str(kernel.modules_dir.parent.parent.parent),
            "--show-depends",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VMError(f"kernel module {name} not found for {kernel.version}: {proc.stderr.strip()}")
    files: list[Path] = []
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "insmod":
            files.append(Path(words[1]))
    return files


def all_module_files(kernel: Kernel) -> tuple[list[Path], list[str]]:
    """All module files to pack, in load order, and the names of the required modules."""
    ordered: dict[Path, None] = {}
    for name in REQUIRED_MODULES:
        for path in module_files(kernel, name):
            ordered.setdefault(path)
    for name in OPTIONAL_MODULES:
        with contextlib.suppress(VMError):
            for path in module_files(kernel, name):
                ordered.setdefault(path)
    return list(ordered), [n.replace("-", "_") for n in REQUIRED_MODULES]


def check() -> list[str]:
    """Problems that prevent running the VM here; empty if it can run."""
    problems: list[str] = []
    try:
        find_qemu()
    except VMError as e:
        problems.append(str(e))
    try:
        find_busybox()
    except VMError as e:
        problems.append(str(e))
    try:
        kernel = find_kernel()
    except VMError as e:
        problems.append(str(e))
        return problems
    if not os.access(kernel.image, os.R_OK):
        problems.append(f"{kernel.image} is not readable by this user")
    try:
        files, _ = all_module_files(kernel)
        for path in files:
            if not os.access(path, os.R_OK):
                problems.append(f"{path} is not readable")
            elif path.name.endswith(".zst") and shutil.which("zstd") is None:
                problems.append(f"{path} is zstd-compressed and zstd is not installed")
    except VMError as e:
        problems.append(str(e))
    return problems


# --------------------------------------------------------------------------- initramfs


class Cpio:
    """A minimal writer for the "newc" cpio format that the kernel unpacks."""

    def __init__(self, out: io.BytesIO) -> None:
        self._out = out
        self._ino = 1

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
        nlink: int = 1,
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,
            0,
            nlink,
            0,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._out.write(header + encoded)
        self._out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0, nlink=1)
        self._out.write(b"\0" * (-self._out.tell() % 512))


def _zstd_decompress(data: bytes, what: object) -> bytes:
    zstd = shutil.which("zstd")
    if zstd is None:
        raise VMError(f"{what} is zstd-compressed and zstd is not installed")
    return subprocess.run([zstd, "-dcq"], input=data, capture_output=True, check=True).stdout


def strip_module_signature(data: bytes) -> bytes:
    """Drop the appended signature: checking it costs about 50 ms per module under TCG.

    Layout: module, signature (sig_len bytes), struct module_signature (12 bytes, with
    the big-endian sig_len last), the magic string.  Unsigned modules load fine unless
    the kernel enforces signatures (module.sig_enforce, lockdown), which we check.
    """
    if not data.endswith(MODULE_SIG_MAGIC):
        return data
    end = len(data) - len(MODULE_SIG_MAGIC) - 12
    (sig_len,) = struct.unpack_from(">I", data, end + 8)
    if sig_len > end:
        return data
    return data[: end - sig_len]


def read_module(path: Path, strip: bool) -> tuple[str, bytes]:
    """The module's file name without compression suffix, and its uncompressed bytes."""
    name = path.name
    raw = path.read_bytes()
    if name.endswith(".ko"):
        data = raw
    elif name.endswith(".ko.xz"):
        name, data = name[:-3], lzma.decompress(raw)
    elif name.endswith(".ko.gz"):
        name, data = name[:-3], zlib.decompress(raw, 16 + zlib.MAX_WBITS)
    elif name.endswith(".ko.zst"):
        name, data = name[:-4], _zstd_decompress(raw, path)
    else:
        raise VMError(f"unknown kernel module format: {path}")
    return name, strip_module_signature(data) if strip else data


def cache_dir(kernel: Kernel) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trio-sctls-vm" / kernel.version


def _recipe_source(*objects: Callable[..., object]) -> str:
    """The source code of the build steps, so that editing them invalidates the cache."""
    parts: list[str] = []
    for obj in objects:
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):
            parts.append(repr(obj))
    return "\n".join(parts)


def ensure_initramfs(kernel: Kernel) -> Path:
    """The cached initramfs for ``kernel``, built atomically if missing or stale."""
    busybox = find_busybox()
    modules, required = all_module_files(kernel)
    strip = not _kernel_config(kernel).get("CONFIG_MODULE_SIG_FORCE")
    recipe = hashlib.sha256(
        _recipe_source(ensure_initramfs, Cpio, read_module, strip_module_signature).encode()
    )
    recipe.update(f"{RECIPE_VERSION}\n{INIT_SCRIPT}\n{required}\n{strip}\n".encode())
    for path in [busybox, *modules]:
        st = path.stat()
        recipe.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    directory = cache_dir(kernel)
    target = directory / f"initramfs-{recipe.hexdigest()[:16]}.cpio"
    if target.is_file():
        return target
    buffer = io.BytesIO()
    cpio = Cpio(buffer)
    for d in ("bin", "dev", "proc", "sys", "tmp", "newroot", "results", "modules"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    names: list[str] = []
    for path in modules:
        name, data = read_module(path, strip)
        cpio.file(f"modules/{name}", data)
        names.append(name)
    cpio.file("modules/order", "".join(f"{n}\n" for n in names).encode())
    cpio.file("modules/required", "".join(f"{n}\n" for n in required).encode())
    cpio.close()
    _atomic_write(target, [buffer.getvalue()])
    _forget_stale(directory, "initramfs-*.cpio", target)
    return target


def _atomic_write(target: Path, chunks: Iterable[bytes]) -> None:
    """Write ``target`` through a temporary file and a rename: concurrent runs are safe."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _forget_stale(directory: Path, pattern: str, keep: Path) -> None:
    """Delete older builds (but not recent ones a concurrent run may be about to boot)."""
    for old in directory.glob(pattern):
        with contextlib.suppress(OSError):
            if old != keep and time.time() - old.stat().st_mtime > 3600:
                old.unlink()


def _kernel_config(kernel: Kernel) -> dict[str, str]:
    config: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (kernel.image.parent / f"config-{kernel.version}").read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                config[name] = value
    return config


def _has_pvh_note(elf: bytes) -> bool:
    """True if the ELF has Xen's PHYS32_ENTRY note, which QEMU needs to boot it (PVH)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def extract_vmlinux(image: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage, if it can be booted directly (PVH)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        return None
    (version,) = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        return None
    start = (image[0x1F1] or 4) * 512 + 512
    offset, length = struct.unpack_from("<II", image, 0x248)
    payload = image[start + offset : start + offset + length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor().decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        elif payload.startswith(b"\x28\xb5\x2f\xfd"):
            elf = _zstd_decompress(payload[:-4], "the kernel")
        else:
            return None
    except (lzma.LZMAError, zlib.error, VMError, subprocess.CalledProcessError):
        return None
    return elf if _has_pvh_note(elf) else None


def boot_image(kernel: Kernel) -> Path:
    """What to give QEMU's -kernel: the cached uncompressed vmlinux if possible.

    The bzImage's own decompressor takes about 4 s under TCG (xz, no SIMD); QEMU boots an
    uncompressed ELF vmlinux directly through its PVH entry point, skipping it (and the
    real-mode setup and SeaBIOS's kernel loading).
    """
    st = kernel.image.stat()
    key = hashlib.sha256(_recipe_source(extract_vmlinux, _has_pvh_note).encode())
    key.update(f"{kernel.image}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    directory = cache_dir(kernel)
    target = directory / f"vmlinux-{key.hexdigest()[:16]}"
    failed = target.with_suffix(".unbootable")
    if target.is_file():
        return target
    if failed.exists():
        return kernel.image
    elf = extract_vmlinux(kernel.image.read_bytes())
    if elf is None:
        _atomic_write(failed, [b""])
        return kernel.image
    _atomic_write(target, [elf])
    _forget_stale(directory, "vmlinux-*", target)
    return target


# --------------------------------------------------------------------------- shares & job


def _covered(path: Path, shares: Iterable[Path]) -> bool:
    return any(path == s or s in path.parents for s in shares)


def _hidden_in_guest(path: Path) -> bool:
    return _covered(path, HIDDEN_IN_GUEST)


def _git_toplevel(directory: Path) -> Path | None:
    git = shutil.which("git")
    if git is not None:
        proc = subprocess.run(
            [git, "-C", str(directory), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(proc.stdout.strip())
    return None


def _venv_root(executable: Path) -> Path:
    """The venv holding ``executable`` (a dir with pyvenv.cfg), else its directory."""
    for parent in executable.parents:
        if (parent / "pyvenv.cfg").is_file():
            return parent
    return executable.parent


def choose_shares(explicit: Sequence[str], command: Sequence[str], cwd: Path) -> list[Path]:
    """Directories to export read-write at the same path: explicit, checkout, and hidden.

    Paths are resolved (symlinks followed), and a directory inside another share is
    dropped since it is visible through that share anyway.
    """
    wanted: list[Path] = []
    for item in explicit:
        path = Path(item).resolve()
        if not path.is_dir():
            raise VMError(f"--share {item}: not a directory")
        wanted.append(path)
    here = Path(__file__).resolve().parent
    wanted.append(_git_toplevel(here) or here.parent.parent)
    # Things the command obviously needs that the guest's tmpfs /tmp would hide.
    hidden = [Path(sys.prefix), cwd]
    if command and os.path.isabs(command[0]):
        hidden.append(_venv_root(Path(os.path.abspath(command[0]))))
    for path in hidden:
        path = path.resolve()
        if path.is_dir() and _hidden_in_guest(path) and path not in HIDDEN_IN_GUEST:
            wanted.append(path)
    shares: list[Path] = []
    for path in sorted(set(wanted), key=lambda p: len(p.parts)):
        if not _covered(path, shares):
            shares.append(path)
    return shares


def build_env(passed: Sequence[str]) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH")
        or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "TRIO_SCTLS_IN_VM": "1",
        "TMPDIR": "/tmp",
    }
    for item in passed:
        name, sep, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise VMError(f"--env {item!r}: bad variable name")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def write_job(
    path: Path, shares: Sequence[Path], env: dict[str, str], cwd: Path, command: Sequence[str]
) -> None:
    lines = ["# Generated by run_in_vm.py; sourced by the guest's /init."]
    lines += [f"share share{i} {shlex.quote(str(p))}" for i, p in enumerate(shares)]
    runner = 'cd "$1" || exit 125; shift; exec "$@"'
    argv = [
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        "chroot",
        "/newroot",
        "/bin/sh",
        "-c",
        runner,
        "run_in_vm",
        str(cwd),
        *command,
    ]
    lines.append("set -- " + " ".join(shlex.quote(a) for a in argv))
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- running


def _qemu_path(path: str | Path) -> str:
    """Escape a path for QEMU's comma-separated option syntax."""
    return str(path).replace(",", ",,")


def qemu_command(
    qemu: str,
    image: Path,
    initramfs: Path,
    results: Path,
    shares: Sequence[Path],
    out_fd: int,
    err_fd: int,
    options: VMOptions,
) -> list[str]:
    cmdline = " ".join(
        ["console=ttyS0 panic=-1 quiet loglevel=3 8250.nr_uarts=1", *options.kernel_args]
    )
    virtfs = "security_model=none,multidevs=remap"
    argv = [qemu, "-machine", "q35", "-accel", "tcg", "-cpu", "qemu64"]
    argv += ["-m", str(options.memory), "-smp", str(options.smp)]
    argv += ["-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot"]
    argv += ["-kernel", str(image), "-initrd", str(initramfs), "-append", cmdline]
    argv += ["-virtfs", f"local,path=/,mount_tag=hostroot,readonly=on,{virtfs}"]
    argv += ["-virtfs", f"local,path={_qemu_path(results)},mount_tag=results,{virtfs}"]
    for i, share in enumerate(shares):
        argv += ["-virtfs", f"local,path={_qemu_path(share)},mount_tag=share{i},{virtfs}"]
    # The command's stdout and stderr: two virtio-serial ports writing to our pipes.
    argv += ["-device", "virtio-serial-pci,id=vser"]
    for name, fd in (("stdout", out_fd), ("stderr", err_fd)):
        argv += ["-chardev", f"file,id={name},path=/dev/fd/{fd}"]
        argv += ["-device", f"virtserialport,bus=vser.0,chardev={name},name={name}"]
    # Seeds the guest's CRNG at once, so getrandom() never blocks.
    argv += ["-device", "virtio-rng-pci"]
    return argv + list(options.qemu_args)


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL if this script dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@dataclass(frozen=True)
class VMOptions:
    timeout: float = 600.0
    memory: int = 1024
    smp: int = 1
    verbose: bool = False
    kernel_args: tuple[str, ...] = ()
    qemu_args: tuple[str, ...] = ()


@dataclass
class RunResult:
    status: int | None  # the command's exit status; None if the VM did not report one
    reason: str  # why there is no status
    marks: dict[str, float]  # seconds from QEMU's start to the guest's progress marks
    console_tail: list[bytes]  # the last lines of the kernel console


class _Sink:
    """A binary stream we copy to; output is dropped once its reader has gone away."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream: BinaryIO | None = stream

    def write(self, data: bytes) -> None:
        if self._stream is not None:
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._stream = None


def _pump(
    fds: dict[int, str], deadline: float, verbose: bool, started: float
) -> tuple[bool, dict[str, float], list[bytes]]:
    """Copy the VM's outputs until QEMU closes them all or the deadline passes.

    Returns whether all outputs were closed in time, the arrival times of the guest's
    progress marks, and the last lines of the kernel console.
    """
    marks: dict[str, float] = {}
    tail: collections.deque[bytes] = collections.deque(maxlen=CONSOLE_TAIL_LINES)
    partial = b""
    sinks = {"stdout": _Sink(sys.stdout.buffer), "stderr": _Sink(sys.stderr.buffer)}
    with selectors.DefaultSelector() as sel:
        for fd, role in fds.items():
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, role)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, marks, list(tail)
            for key, _ in sel.select(timeout=min(remaining, 1.0)):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fd)
                elif key.data in sinks:
                    sinks[key.data].write(data)
                else:
                    *lines, partial = (partial + data).split(b"\n")
                    for raw in lines:
                        line = raw.rstrip(b"\r")
                        at = line.find(MARK_PREFIX)
                        if at >= 0:
                            mark = line[at + len(MARK_PREFIX) :].decode(errors="replace")
                            marks[mark] = time.monotonic() - started
                            continue
                        tail.append(line)
                        if verbose or MSG_PREFIX in line:
                            sinks["stderr"].write(line + b"\n")
    if partial:
        tail.append(partial)
    return True, marks, list(tail)


def _stop(qemu: subprocess.Popen[bytes]) -> None:
    if qemu.poll() is None:
        qemu.terminate()
        try:
            qemu.wait(timeout=3)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()


def run_vm(
    command: Sequence[str],
    shares: Sequence[Path],
    env: dict[str, str],
    cwd: Path,
    options: VMOptions,
) -> RunResult:
    """Boot the VM, run ``command`` in it, copy its output live; KeyboardInterrupt on
    Ctrl-C or SIGTERM (QEMU is killed in every case)."""
    qemu_bin = find_qemu()
    kernel = find_kernel()
    initramfs = ensure_initramfs(kernel)
    image = boot_image(kernel)
    with tempfile.TemporaryDirectory(prefix="run_in_vm-") as results_name:
        results = Path(results_name)
        write_job(results / "job.sh", shares, env, cwd, command)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        argv = qemu_command(qemu_bin, image, initramfs, results, shares, out_w, err_w, options)
        if options.verbose:
            sys.stderr.write("run_in_vm: " + shlex.join(argv) + "\n")
        started = time.monotonic()
        deadline = started + options.timeout
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        qemu: subprocess.Popen[bytes] | None = None
        try:
            try:
                qemu = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    pass_fds=(out_w, err_w),
                    start_new_session=True,  # Ctrl-C is ours to handle, not QEMU's
                    preexec_fn=_die_with_parent,
                )
            finally:
                os.close(out_w)
                os.close(err_w)
            assert qemu.stdout is not None
            fds = {qemu.stdout.fileno(): "console", out_r: "stdout", err_r: "stderr"}
            in_time, marks, tail = _pump(fds, deadline, options.verbose, started)
            if in_time:
                try:
                    qemu.wait(timeout=max(deadline - time.monotonic(), 1.0))
                except subprocess.TimeoutExpired:
                    in_time = False
        except _Terminated:
            raise KeyboardInterrupt from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            if qemu is not None:
                _stop(qemu)
                if qemu.stdout is not None:
                    qemu.stdout.close()
            os.close(out_r)
            os.close(err_r)
        marks["exit"] = time.monotonic() - started
        status: int | None = None
        with contextlib.suppress(OSError, ValueError):
            status = int((results / "status").read_text().strip())
        if not in_time:
            reason = f"timed out after {options.timeout:g} s"
        else:
            reason = f"ended without a command status (QEMU exit status {qemu.returncode})"
        return RunResult(status, reason, marks, tail)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    args = list(argv)
    command: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, command = args[:i], args[i + 1 :]
    parser = argparse.ArgumentParser(
        prog="run_in_vm.py",
        usage="%(prog)s [options] -- COMMAND [ARGS...]\n       %(prog)s --check",
        description="Run COMMAND inside a QEMU VM booting the host's Debian kernel "
        "(kernel SCTP and netem), with the host's / visible read-only.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report whether the VM can run here; exit 0 if so, else 1",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="kill the VM after this long (default: %(default)s)",
    )
    parser.add_argument(
        "--share",
        action="append",
        default=[],
        metavar="DIR",
        help="also export DIR read-write at the same path in the guest (repeatable; "
        "the checkout is always shared)",
    )
    parser.add_argument(
        "--cwd",
        default=None,
        metavar="DIR",
        help="working directory of COMMAND (default: the current one)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="set NAME in the guest (to the host's value if no VALUE)",
    )
    parser.add_argument("--memory", type=int, default=1024, metavar="MiB", help="guest RAM")
    parser.add_argument("--smp", type=int, default=1, metavar="N", help="virtual CPUs")
    parser.add_argument(
        "--kernel-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="append ARG to the guest kernel's command line",
    )
    parser.add_argument(
        "--qemu-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="append ARG to QEMU's command line (repeatable)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the kernel console, the QEMU command and timings",
    )
    ns = parser.parse_args(args)
    if not ns.check and not command:
        parser.error("missing '-- COMMAND [ARGS...]'")
    return ns, command


def main(argv: Sequence[str] | None = None) -> int:
    ns, command = parse_args(sys.argv[1:] if argv is None else argv)
    if ns.check:
        problems = check()
        for problem in problems:
            print(f"run_in_vm: cannot run the VM: {problem}")
        if not problems:
            kernel = find_kernel()
            print(f"run_in_vm: OK: {find_qemu()}, kernel {kernel.version}")
        return 1 if problems else 0
    try:
        cwd = Path(os.path.abspath(ns.cwd or os.getcwd()))
        shares = choose_shares(ns.share, command, cwd)
        env = build_env(ns.env)
        options = VMOptions(
            ns.timeout, ns.memory, ns.smp, ns.verbose, tuple(ns.kernel_arg), tuple(ns.qemu_arg)
        )
        result = run_vm(command, shares, env, cwd, options)
    except VMError as e:
        print(f"run_in_vm: error: {e}", file=sys.stderr)
        return EXIT_VM_FAILURE
    except KeyboardInterrupt:
        print("run_in_vm: interrupted, VM killed", file=sys.stderr)
        return EXIT_INTERRUPTED
    if ns.verbose:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.marks.items())
        print(f"run_in_vm: timings since QEMU start: {timings}", file=sys.stderr)
    if result.status is None:
        if not ns.verbose:
            for line in result.console_tail:
                text = ANSI_ESCAPE.sub("", line.decode(errors="replace"))
                print(f"run_in_vm: console: {text}", file=sys.stderr)
        print(f"run_in_vm: error: the VM {result.reason}", file=sys.stderr)
        return EXIT_VM_FAILURE
    return result.status


if __name__ == "__main__":
    sys.exit(main())
