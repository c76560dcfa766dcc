"""Writing a commit's archive (`git archive`'s tar stream) into a folder, refusing anything that could reach outside it.

What tarfile's `filter="data"` guarantees, written out here because that filter came only in
Python 3.11.4 and Debian 12 has 3.11.2: no absolute or `..` names, nothing written through a
symlink, no symlink that points outside the folder (so neither the build context, the Dockerfile
nor .dockerignore can lead the build to a file of the host), only files, folders and symlinks (no
devices, fifos or hard links), no setuid, setgid or sticky bits, no owner taken from the archive;
files 0644 or 0755 and folders 0755 whatever the umask (the image gets the checkout's modes, and a
folder nginx's unprivileged workers cannot enter is a broken site).

A folder may also be refreshed in place to a new commit: what is unchanged is left untouched (its
mtime too, so BuildKit's file sync, which compares metadata, sends only what changed), what changed is
rewritten, and what the new commit lacks is removed: the result is exactly the new tree, whatever the
folder held before.
Imports hookdeploy.core only; gitops.export calls it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from typing import BinaryIO

from hookdeploy.core.errors import GitError
from hookdeploy.core.names import printable
from hookdeploy.core.models import release_tag

COPY_CHUNK = 1 << 20  # bytes of a file read from the archive (or compared) at a time
FILE_MODES = (0o644, 0o755)


def open_archive(stream: BinaryIO) -> tarfile.TarFile:
    """The tar archive coming on `stream` (a pipe), read in one pass."""
    return tarfile.open(fileobj=_OnePass(stream), mode="r:", tarinfo=_Header)


def extract(tar: tarfile.TarFile, destination: str | os.PathLike, sha: str, refresh: bool = False) -> None:
    """Write the archive into the folder `destination` (empty, unless `refresh`: then whatever it holds
    becomes exactly the archive's tree); GitError naming the commit and member for anything refused."""
    Extraction(destination, sha, refresh).run(tar)


class Extraction:
    """One archive written into one folder, remembering what it made so each member costs few syscalls.

    A folder is entered only once it is known to be a real folder made (or found, and checked with
    lstat) by this extraction; nothing can turn it into a symlink later, as every file and symlink is
    created only where nothing is (O_EXCL). Symlinks are checked when made and again once all are
    there, when what they point through can no longer change (a later symlink `b` -> `.` would make
    an earlier `a` -> `b/../x` lead out of the folder)."""

    def __init__(self, destination: str | os.PathLike, sha: str, refresh: bool = False):
        self.root = os.path.realpath(destination)
        self.sha = sha
        self.refresh = refresh
        self.folders = {""}  # relative paths of folders known to be real folders of this tree
        self.written: set[str] = set()  # relative paths of this tree's files and symlinks
        self.symlinks: list[tuple[str, str]] = []
        self.umask_strips = _umask() & 0o755 != 0  # if not, a new file has its mode already

    def run(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            self.member(tar, member)
        if self.refresh:
            self.sweep(self.root, "")
        for name, linkname in self.symlinks:
            self.check_symlink(name, linkname)

    def refuse(self, why: str) -> GitError:
        return GitError(f"commit {release_tag(self.sha)}{why}")

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        raw = member.name
        parts = [part for part in raw.split("/") if part not in ("", ".")]
        if raw.startswith("/") or "\0" in raw or ".." in parts:
            raise self.refuse(f" has a path that leaves the checkout: {printable(raw)}")
        name = "/".join(parts)
        if name in self.written or (name in self.folders and not member.isdir()):
            raise self.refuse(f": {printable(name)} is in the archive twice")
        if member.isdir():
            self.enter(parts)
            return
        if not parts or not (member.isfile() or member.issym()) or member.issparse():
            raise self.refuse(f": {printable(name)} is not a file, folder or symlink")
        if name.rpartition("/")[0] not in self.folders:
            self.enter(parts[:-1])
        target = f"{self.root}/{name}"
        if member.issym():
            self.symlink(name, target, member.linkname)
        else:
            self.file(tar, member, target)
        self.written.add(name)

    def enter(self, parts: list[str]) -> None:
        """Make sure the folder `parts` and its parents are real folders of mode 0755 inside the root."""
        if "/".join(parts) in self.folders:
            return
        for depth in range(1, len(parts) + 1):
            relative = "/".join(parts[:depth])
            if relative in self.folders:
                continue
            if relative in self.written:
                raise self.refuse(f": {printable('/'.join(parts))} would be written through "
                                  f"{printable(relative)}, which is not a folder")
            path = f"{self.root}/{relative}"
            found = self.existing(path)
            if found is not None and stat.S_ISDIR(found.st_mode):
                if stat.S_IMODE(found.st_mode) != 0o755:
                    os.chmod(path, 0o755)
            else:
                if found is not None:  # a file or symlink the previous tree had here
                    os.unlink(path)
                os.mkdir(path, 0o755)
                os.chmod(path, 0o755)  # the umask may have taken bits away
            self.folders.add(relative)

    def symlink(self, name: str, target: str, linkname: str) -> None:
        if not self.refresh:  # early, so no symlink leading out is ever made; refreshing, leftovers may mislead it
            self.check_symlink(name, linkname)
        found = self.existing(target)
        if found is not None:
            if stat.S_ISLNK(found.st_mode) and os.readlink(target) == linkname:
                self.symlinks.append((name, linkname))
                return
            _remove(target, found)
        os.symlink(linkname, target)
        self.symlinks.append((name, linkname))

    def file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
        mode = FILE_MODES[bool(member.mode & 0o111)]
        stream = tar.fileobj
        stream.seek(member.offset_data)
        found = self.existing(target)
        if found is not None:
            if stat.S_ISREG(found.st_mode) and found.st_size == member.size and found.st_nlink == 1:
                self.rewrite(stream, member, target, found, mode)
                return
            _remove(target, found)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            padded = member.size + (-member.size) % tarfile.BLOCKSIZE
            if padded <= COPY_CHUNK:  # most files: one read, the padding too (tarfile then need not seek)
                data = stream.read(padded)
                if len(data) < padded:
                    raise self.refuse(f": the archive ends inside {printable(member.name)}")
                _write(descriptor, memoryview(data)[:member.size])
            else:
                _copy(stream, member.size, descriptor, member.name)
            if self.umask_strips:
                os.fchmod(descriptor, mode)
        finally:
            os.close(descriptor)

    def rewrite(self, stream, member: tarfile.TarInfo, target: str, found: os.stat_result, mode: int) -> None:
        """Leave the file at `target` as it is if it holds the member's bytes already (only its mode
        set right), else replace it by a new file holding them."""
        old = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            matched = 0
            while matched < member.size:
                chunk = stream.read(min(member.size - matched, COPY_CHUNK))
                if not chunk:
                    raise self.refuse(f": the archive ends inside {printable(member.name)}")
                if os.pread(old, len(chunk), matched) != chunk:
                    break
                matched += len(chunk)
            else:
                if stat.S_IMODE(found.st_mode) != mode:
                    os.fchmod(old, mode)
                return
            # Differs past `matched` bytes, which were read from the archive already: the new
            # file gets them from the old one, then the chunk in hand, then the rest of the archive.
            os.unlink(target)
            new = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                copied = 0
                while copied < matched:
                    copied += os.sendfile(new, old, copied, matched - copied) or _short(member)
                _write(new, chunk)
                _copy(stream, member.size - matched - len(chunk), new, member.name)
                os.fchmod(new, mode)
            finally:
                os.close(new)
        finally:
            os.close(old)

    def existing(self, path: str) -> os.stat_result | None:
        """What is at `path` (not followed), when refreshing; None if nothing is or the folder was empty."""
        if not self.refresh:
            return None
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None

    def sweep(self, folder: str, relative: str) -> None:
        """Remove what the previous tree had and this one has not."""
        with os.scandir(folder) as entries:
            for entry in list(entries):
                name = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if name in self.folders:
                        self.sweep(entry.path, name)
                    else:
                        shutil.rmtree(entry.path)
                elif name not in self.written:
                    os.unlink(entry.path)

    def check_symlink(self, name: str, linkname: str) -> None:
        parent = os.path.dirname(f"{self.root}/{name}")
        points_to = os.path.realpath(f"{parent}/{linkname}")
        if linkname.startswith("/") or os.path.commonpath([self.root, points_to]) != self.root:
            raise self.refuse(f": symlink {printable(name)} points outside the checkout "
                              f"(to {printable(linkname)}); hookdeploy does not follow it")


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every thread a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: assume it strips everything, and set every mode


def _copy(stream, size: int, descriptor: int, name: str) -> None:
    """`size` bytes from the archive's stream into the open file."""
    while size:
        chunk = stream.read(min(size, COPY_CHUNK))
        if not chunk:
            raise GitError(f"the archive ends inside {printable(name)}")
        size -= len(chunk)
        _write(descriptor, chunk)


def _write(descriptor: int, data: bytes | memoryview) -> None:
    written = os.write(descriptor, data)
    while written < len(data):
        data = memoryview(data)[written:]
        written = os.write(descriptor, data)


def _short(member: tarfile.TarInfo) -> int:
    raise GitError(f"{printable(member.name)} changed while it was being refreshed")


def _remove(path: str, found: os.stat_result) -> None:
    if stat.S_ISDIR(found.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _OnePass:
    """A pipe as the file tarfile reads: it only ever seeks forward over an archive being extracted, so
    no temp file is needed, and tarfile's own stream mode (r|), whose buffer is copied on every read, is not."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.position += len(data)
        return data

    def tell(self) -> int:
        return self.position

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or position < self.position:
            raise tarfile.ReadError("the archive is read in one pass")
        while self.position < position and self.read(min(position - self.position, COPY_CHUNK)):
            pass
        return self.position


class _Header(tarfile.TarInfo):
    """A tar header parsed for extraction only: for a plain ustar file, folder or symlink just the
    fields extraction uses (tarfile's own parser reads owners, times and device numbers too, and is
    most of a checkout's time); anything else (pax headers, other formats) is left to tarfile's."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        kind = buf[156:157]
        if len(buf) != tarfile.BLOCKSIZE or kind not in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE) \
                or buf[257:263] != tarfile.POSIX_MAGIC[:6]:
            return super().frombuf(buf, encoding, errors)
        try:
            checksum = _octal(buf[148:156])
            mode, size = _octal(buf[100:108]), _octal(buf[124:136])
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        if sum(buf) - sum(buf[148:156]) + 256 != checksum:
            return super().frombuf(buf, encoding, errors)  # which says what is wrong
        header = cls()
        name = _text(buf[0:100], encoding, errors)
        prefix = _text(buf[345:500], encoding, errors)
        header.name = f"{prefix}/{name}" if prefix else name
        header.mode, header.size, header.type, header.chksum = mode, size, kind, checksum
        header.linkname = _text(buf[157:257], encoding, errors)
        if kind == tarfile.DIRTYPE:
            header.name = header.name.rstrip("/")
        return header


def _octal(field: bytes) -> int:
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _text(field: bytes, encoding: str, errors: str) -> str:
    return field.split(b"\0", 1)[0].decode(encoding, errors)
