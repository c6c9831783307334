"""An emulated Debian 12 arm64 root for scripts/arm64-check and benchmarks/arm64_bench.py.

Standard library only (it runs on the host's python3 before any venv exists); root only
(debootstrap, chroot, mounts, binfmt_misc).

- Tools: ``debootstrap`` and ``qemu-user-static`` from apt when missing; binfmt_misc mounted and
  ``qemu-aarch64`` registered from the package's own ``/usr/lib/binfmt.d`` entry (flag F: the
  interpreter is opened at registration, so it works inside the chroot) when no systemd did it.
- The root: ``debootstrap --arch=arm64 --variant=minbase bookworm`` with python3 and
  python3-venv, and what building one C extension for that Python takes: gcc, libc6-dev and
  python3.11-dev (the headers; debootstrap follows Depends only, never Recommends), built
  once into the cache (below) and reused while its recipe is unchanged.
  The mirror is the host's own Debian mirror, read from its apt sources; debootstrap's
  default when the host has none.
- The cache: ``$ARM64_CHECK_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/edgeagent/arm64``,
  outside the work tree on purpose: CI runs in a fresh clone on the same machine, so a cache
  inside the clone would be cold on every run (root and venv are ~1.1 GB with gcc; here the
  root takes 3-8 minutes to build under emulation, depending on the machine's load, and the
  aarch64 wheels and the compile of ``_glue.c`` another 2-4 to install).
  Nothing of it is in the repository. A lock file serialises concurrent runs (a
  developer's and CI's).
- Inside: a venv at ``/opt/edgeagent`` with ``pip install '/src[test]'``: the dependencies
  are aarch64 wheels from the package index; ``edgeagent.engine._glue`` (the one compiled
  module, ``edgeagent/engine/_glue.c``) is compiled from source there by the root's gcc at the
  board's baseline (no -march flags: armv8-a, what every supported board runs). ``/src`` is a
  copy of the working tree (tracked and untracked, not ignored, files); pip's cache is kept in
  the root.
- The CPU: qemu emulates a Cortex-A76 (``--cpu``; the Raspberry Pi 5's and RK3588's big
  cores: ARMv8.2 with the dot-product instructions, no i8mm, no SVE) rather than qemu's
  ``max`` (SVE2, SME, i8mm: kernels no supported board runs). qemu-user 7.2 passes the
  host's x86 ``/proc/cpuinfo`` through, which makes ONNX Runtime's cpuinfo library crash;
  the root sees a ``/proc/cpuinfo`` describing the emulated core instead, as the board's
  kernel would (implementer, part, the HWCAP feature names qemu reports for that core).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
# python3 and its venv, and the C toolchain and headers setuptools builds edgeagent.engine._glue
# with (python3.11-dev rather than python3-dev: the same headers without the Sphinx JavaScript)
PACKAGES = ("python3", "python3-venv", "ca-certificates", "gcc", "libc6-dev", "python3.11-dev")
VENV = "/opt/edgeagent"
SRC = "/src"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
RECIPE_VERSION = 2  # 2: the C toolchain for edgeagent.engine._glue
"""Bump when the root's recipe changes in a way its stamp cannot see."""

# /proc/cpuinfo of the emulated cores, as an arm64 kernel prints it: MIDR fields, and the
# HWCAP names of what qemu-user 7.2 reports for that core (checked with LD_SHOW_AUXV).
CPUS = {
    # Raspberry Pi 5 (BCM2712), RK3588 big cores: Cortex-A76 r4p1.
    "cortex-a76": {
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
        "asimdrdm lrcpc dcpop asimddp",
        "variant": "0x4",
        "part": "0xd0b",
        "revision": "1",
    },
    # Raspberry Pi 4 (BCM2711): Cortex-A72 r0p3, ARMv8.0 (no dot product).
    "cortex-a72": {
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid",
        "variant": "0x0",
        "part": "0xd08",
        "revision": "3",
    },
}
DEFAULT_CPU = "cortex-a76"


def log(message: str) -> None:
    print(f"arm64: {message}", file=sys.stderr, flush=True)


def default_cache() -> Path:
    if os.environ.get("ARM64_CHECK_CACHE"):
        return Path(os.environ["ARM64_CHECK_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeagent" / "arm64"


def _run(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


# ---------------------------------------------------------------- host tools and binfmt


_apt_updated = False


def apt_install(*packages: str) -> None:
    global _apt_updated  # noqa: PLW0603 - one apt-get update per process
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        _run(["apt-get", "update", "-qq"], env=env)
        _apt_updated = True
    log(f"apt-get install {' '.join(packages)}")
    _run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_host_tools() -> None:
    """debootstrap, qemu-user-static, and qemu-aarch64 registered with binfmt_misc."""
    if os.geteuid() != 0:
        raise SystemExit("arm64: needs root (debootstrap, chroot, mounts, binfmt_misc)")
    missing = [
        p
        for p, exe in (("debootstrap", "debootstrap"), ("qemu-user-static", "qemu-aarch64-static"))
        if shutil.which(exe) is None and not Path("/usr/sbin", exe).exists()
    ]
    if missing:
        apt_install(*missing)
    if not (BINFMT / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    entry = BINFMT / "qemu-aarch64"
    if entry.exists() and "flags: " in (text := entry.read_text()):
        flags = text.split("flags: ", 1)[1].split("\n", 1)[0]
        if "F" in flags and text.startswith("enabled"):
            return
        entry.write_text("-1")  # registered without F (or disabled): replace it
    line = BINFMT_CONF.read_text().strip()
    if not line.endswith("F") and ":" in line:
        line += "F"
    (BINFMT / "register").write_text(line)
    log("registered qemu-aarch64 with binfmt_misc")


def host_mirror() -> str | None:
    """The Debian mirror of the host's apt sources (not the security archive), if any."""
    sources = Path("/etc/apt/sources.list.d")
    texts = sorted(sources.glob("*.sources")) if sources.is_dir() else []
    for path in texts:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if ":" in line and not line.startswith("#")
            )
            uris = fields.get("URIs", "").split()
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites and uris:
                return uris[0].strip()
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line + " ")
            if m:
                return m.group(1)
    return None


# ---------------------------------------------------------------- the root


@dataclass
class Root:
    """The cached arm64 root: build, mount, install, run."""

    cache: Path = field(default_factory=default_cache)
    cpu: str = DEFAULT_CPU

    @property
    def path(self) -> Path:
        return self.cache / f"{SUITE}-arm64"

    @property
    def stamp(self) -> Path:
        return self.cache / f"{SUITE}-arm64.json"

    def recipe(self) -> dict[str, object]:
        return {"suite": SUITE, "packages": list(PACKAGES), "version": RECIPE_VERSION}

    # -- cache and lock

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.cache.mkdir(parents=True, exist_ok=True)
        with (self.cache / "lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another run holding {self.cache / 'lock'}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def is_built(self) -> bool:
        if not self.stamp.exists() or not (self.path / "usr/bin/python3").exists():
            return False
        try:
            return bool(json.loads(self.stamp.read_text()).get("recipe") == self.recipe())
        except ValueError:
            return False

    def build(self) -> bool:
        """debootstrap the root unless the cached one matches the recipe; True if built."""
        if self.is_built():
            return False
        self.unmount_all()
        scratch = self.path.with_name(self.path.name + ".new")
        for stale in (scratch, self.path):
            self.unmount_all(stale)
            if stale.exists():
                _safe_rmtree(stale)
        mirror = host_mirror()
        args = [
            "debootstrap",
            "--arch=arm64",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(scratch),
        ]
        if mirror:
            args.append(mirror)
        log(f"building the root: {' '.join(args)}")
        _run(args, stdout=sys.stderr)
        scratch.rename(self.path)
        built = time.strftime("%FT%TZ", time.gmtime())
        info = {"recipe": self.recipe(), "mirror": mirror, "built": built}
        self.stamp.write_text(json.dumps(info, indent=1) + "\n")
        return True

    # -- mounts

    def unmount_all(self, under: Path | None = None) -> None:
        """Unmount whatever is mounted under the root (a killed run leaves mounts behind)."""
        base = str((under or self.path).resolve())
        with open("/proc/mounts") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
        for point in sorted(
            (p for p in points if p == base or p.startswith(base + "/")), key=len, reverse=True
        ):
            subprocess.run(["umount", "-l", point], check=False)

    @contextlib.contextmanager
    def mounted(self) -> Iterator[None]:
        """/proc, /sys (read-only), /dev/shm and the emulated core's /proc/cpuinfo."""
        root = self.path
        self.unmount_all()
        try:
            _run(["mount", "-t", "proc", "proc", str(root / "proc")])
            _run(["mount", "-t", "sysfs", "-o", "ro", "sysfs", str(root / "sys")])
            (root / "dev/shm").mkdir(exist_ok=True)
            _run(["mount", "-t", "tmpfs", "-o", "mode=1777", "shm", str(root / "dev/shm")])
            cpuinfo = root / "etc/edgeagent-arm64-cpuinfo"
            cpuinfo.write_text(fake_cpuinfo(self.cpu))
            _run(["mount", "--bind", "-o", "ro", str(cpuinfo), str(root / "proc/cpuinfo")])
            self._host_config()
            yield
        finally:
            self.unmount_all()

    def _host_config(self) -> None:
        """DNS, and the certificate authorities the host trusts locally (a TLS proxy's)."""
        root = self.path
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        local = Path("/usr/local/share/ca-certificates")
        target = root / "usr/local/share/ca-certificates"
        wanted = sorted(local.glob("*.crt")) if local.is_dir() else []
        have = sorted(p.name for p in target.glob("*.crt")) if target.is_dir() else []
        if [p.name for p in wanted] != have or any(
            p.read_bytes() != (target / p.name).read_bytes() for p in wanted
        ):
            target.mkdir(parents=True, exist_ok=True)
            for old in target.glob("*.crt"):
                old.unlink()
            for p in wanted:
                shutil.copyfile(p, target / p.name)
            self.run(["update-ca-certificates"], capture=True)

    # -- running inside

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment for the root: nothing of the host's pip or venv settings."""
        env = {
            "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "QEMU_CPU": self.cpu,
            "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_DEFAULT_TIMEOUT": "120",
        }
        for key in ("http_proxy", "https_proxy", "no_proxy"):
            for name in (key, key.upper()):
                if name in os.environ:
                    env[name] = os.environ[name]
        env.update(extra or {})
        return env

    def run(
        self,
        args: Sequence[str],
        cwd: str = "/",
        env: Mapping[str, str] | None = None,
        capture: bool = False,
        timeout: float | None = None,
        output: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside the root (cwd is a path inside it); never raises on failure."""
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        command = [chroot, str(self.path), "/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *args]
        kwargs: dict[str, object] = {"env": self.env(env), "text": True, "timeout": timeout}
        if output is not None:
            with output.open("a") as f:
                f.write(f"$ {' '.join(args)}    (in {cwd})\n")
                f.flush()
                return subprocess.run(  # type: ignore[call-overload, no-any-return]
                    command, stdout=f, stderr=subprocess.STDOUT, check=False, **kwargs
                )
        if capture:
            kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return subprocess.run(command, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]

    # -- the project inside

    def sync_source(self, repo: Path = REPO) -> int:
        """Copy the working tree (tracked and untracked files, not ignored ones) to /src."""
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=repo,
            check=True,
            capture_output=True,
        ).stdout.split(b"\0")
        target = self.path / SRC.lstrip("/")
        if target.exists():
            _safe_rmtree(target)
        target.mkdir(parents=True)
        count = 0
        for raw in files:
            if not raw:
                continue
            rel = raw.decode()
            source = repo / rel
            if not source.is_file():  # deleted in the working tree, still in the index
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest, follow_symlinks=False)
            count += 1
        return count

    def install(self, output: Path) -> bool:
        """The venv and ``pip install '/src[test]'``; True on success."""
        venv = self.path / VENV.lstrip("/") / "bin/python"
        if (
            not venv.exists()
            and self.run(["python3", "-m", "venv", VENV], output=output).returncode
        ):
            return False
        # Once the venv holds the test extra's setuptools, build edgeagent's wheel with it:
        # an isolated build env would install setuptools again under emulation every run.
        marker = self.path / VENV.lstrip("/") / ".edgeagent-installed"
        isolation = ["--no-build-isolation"] if marker.exists() else []
        result = self.run(
            ["python", "-m", "pip", "install", "--progress-bar", "off", *isolation, f"{SRC}[test]"],
            output=output,
            timeout=3600,
        )
        if result.returncode != 0:
            return False
        marker.touch()
        self.place_compiled(output)
        return True

    def site_packages(self) -> Path:
        return next((self.path / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))

    def compiled_modules(self) -> list[Path]:
        """The extension modules pip built into the venv, relative to site-packages."""
        site = self.site_packages()
        return sorted(so.relative_to(site) for so in (site / "edgeagent").rglob("*.so"))

    def place_compiled(self, output: Path) -> None:
        """Copy the extension modules pip built into /src, beside their C sources.

        The tests run in /src, which pytest (rootdir, the ``tests`` package) and ``python -m``
        put first on sys.path, so they import edgeagent from that copy rather than the venv;
        the host's editable install builds its modules in place, and here /src gets the very
        ones pip compiled and installed (the working tree's own, x86-64, are ignored files and
        never copied).
        """
        site = self.site_packages()
        with output.open("a") as f:
            for rel in self.compiled_modules():
                shutil.copy2(site / rel, self.path / SRC.lstrip("/") / rel)
                f.write(f"placed {VENV}/.../site-packages/{rel} in {SRC}/{rel}\n")


def fake_cpuinfo(cpu: str) -> str:
    """``/proc/cpuinfo`` for the host's online CPU count of the emulated core."""
    spec = CPUS[cpu]
    count = os.cpu_count() or 1
    blocks = []
    for i in range(count):
        blocks.append(
            f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {spec['features']}\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {spec['variant']}\n"
            f"CPU part\t: {spec['part']}\nCPU revision\t: {spec['revision']}\n"
        )
    return "\n".join(blocks) + "\n"


def _safe_rmtree(path: Path) -> None:
    """rmtree that refuses to cross into anything still mounted (the host's /proc, /sys)."""
    base = str(path.resolve())
    with open("/proc/mounts") as f:
        if any(line.split()[1].startswith(base + "/") for line in f):
            raise SystemExit(f"arm64: {path} still has mounts under it; not removing it")
    shutil.rmtree(path)
