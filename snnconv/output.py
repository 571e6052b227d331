"""Safe output: snnconv never deletes, hides or overwrites a file it did not create.

Every command that writes goes through this module, and the destination is checked *before any
work starts* (a failed check is a one-line :class:`SnnconvError`, nothing is created).

Folders (:func:`atomic_dir`, for ``convert --output-dir``, ``export --format lava``, ``evolve``):

* a new path, or an existing **empty** folder, is written;
* an existing folder is replaced only when it is an snnconv run folder (it holds the marker file
  :data:`MARKER`, written by snnconv, which lists the files snnconv put there), **and**
  ``overwrite=True`` (``--overwrite``) is given, **and** it holds nothing but those files;
* anything else (a regular file, a symbolic link, a folder of the user's, the current folder or one
  of its parents) is refused.

The run is written into a hidden temporary folder created next to the destination at the start
(so an unwritable destination fails before the work, not after it). On success the marker is
written and the folder is renamed into place; on any failure the temporary folder, and any
parent folders this call created, are removed, so nothing partial is left behind.

Files (:func:`atomic_file`, for ``export --out``, ``train --out``, ``swa --out``, ``import --out``):
an existing file is replaced only with ``overwrite=True``; the new content goes to a uniquely named
temporary file in the same folder and is renamed over the destination in one step.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from snnconv.errors import SnnconvError

#: the marker file snnconv writes into every folder it creates (run folders, batch folders)
MARKER = ".snnconv-run.json"


def _files_under(root: Path) -> list[str]:
    """Relative paths of everything below ``root`` (files, links, and empty folders as ``name/``)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for f in filenames:
            out.append(str(rel / f))
        if not dirnames and not filenames and Path(dirpath) != root:
            out.append(str(rel) + "/")
    return sorted(out)


def read_marker(folder: str | Path) -> dict | None:
    """The marker of an snnconv folder, or None when ``folder`` holds none (or an unreadable one)."""
    p = Path(folder) / MARKER
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("created_by") == "snnconv" else None


def write_marker(folder: str | Path, kind: str = "run") -> None:
    """Write the marker listing every file now under ``folder`` (call it last)."""
    from snnconv import __version__

    folder = Path(folder)
    files = [f for f in _files_under(folder) if f != MARKER]
    data = {"created_by": "snnconv", "kind": kind, "version": __version__,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
    write_text_atomic(folder / MARKER, json.dumps(data, indent=1))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` (a file snnconv owns) with ``text`` in one step, via a uniquely named temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _foreign_entries(folder: Path) -> list[str]:
    """What ``folder`` holds that its marker does not list (everything, without a marker)."""
    marker = read_marker(folder)
    present = [f for f in _files_under(folder) if f != MARKER]
    if marker is None:
        return present
    listed = set(marker.get("files", []))
    return [f for f in present if f not in listed]


def _abs(path: str | Path, what: str) -> Path:
    if path is None or str(path).strip() == "":
        raise SnnconvError(f"{what}: empty path")
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def check_output_dir(path: str | Path, overwrite: bool = False, what: str = "output folder",
                     allow_kind: tuple[str, ...] = ("run",)) -> Path:
    """Check that ``path`` may be written as a folder under the rules above; returns its absolute path.

    Raises a one-line :class:`SnnconvError` naming the path and the reason. Creates nothing."""
    final = _folder_target(path, what)
    if final.exists():
        if any(final.iterdir()):
            marker = read_marker(final)
            if marker is None:
                raise SnnconvError(f"{what} {path}: exists and is not an snnconv folder (it has no {MARKER}); "
                                   f"snnconv never replaces folders it did not create, choose a new folder")
            if marker.get("kind", "run") not in allow_kind:
                raise SnnconvError(f"{what} {path}: is an snnconv {marker.get('kind')} folder, not a "
                                   f"{' or '.join(allow_kind)} folder; choose a new folder")
            foreign = _foreign_entries(final)
            if foreign:
                raise SnnconvError(f"{what} {path}: holds '{foreign[0]}', which snnconv did not write "
                                   f"({len(foreign)} such file(s)); move them out or choose a new folder")
            if not overwrite:
                raise SnnconvError(f"{what} {path}: holds an earlier snnconv run; pass --overwrite to replace it")
    _check_parent(final, what, path)
    return final


def _folder_target(path: str | Path, what: str) -> Path:
    """The absolute path of a folder destination, refusing the current folder or its parents, a symbolic
    link and an existing non-folder (shared by run folders and batch folders)."""
    final = _abs(path, what)
    cwd = Path.cwd().resolve()
    if final == cwd or final in cwd.parents or final.resolve() == cwd or final.resolve() in cwd.parents:
        raise SnnconvError(f"{what} {path}: is the current folder or one of its parents; choose a new folder")
    if final.is_symlink():
        raise SnnconvError(f"{what} {path}: is a symbolic link; snnconv does not write through links, "
                           f"choose a new folder")
    if final.exists() and not final.is_dir():
        raise SnnconvError(f"{what} {path}: exists and is not a folder; snnconv will not replace it")
    return final


def _check_parent(final: Path, what: str, shown) -> None:
    """The nearest existing ancestor of ``final`` must be a writable folder."""
    anc = final.parent
    while not anc.exists():
        if anc.is_symlink():  # a dangling link
            raise SnnconvError(f"{what} {shown}: {anc} is a broken symbolic link")
        anc = anc.parent
    if not anc.is_dir():
        raise SnnconvError(f"{what} {shown}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise SnnconvError(f"{what} {shown}: no permission to write in {anc}")


def _make_parents(final: Path, what: str, shown) -> list[Path]:
    """Create the missing parents of ``final``; returns them (deepest last) so they can be removed."""
    missing = []
    p = final.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            _remove_created(created)
            raise SnnconvError(f"{what} {shown}: cannot create folder {d}: {e.strerror}") from None
        created.append(d)
    return created


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()  # only if still empty


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


class OutputDir:
    """A checked destination folder with its temporary folder already made (see :func:`atomic_dir`)."""

    def __init__(self, path: str | Path, overwrite: bool = False, kind: str = "run", what: str = "output folder"):
        self.kind, self.what, self.overwrite = kind, what, overwrite
        self.final = check_output_dir(path, overwrite, what, allow_kind=(kind,))
        self._created = _make_parents(self.final, what, path)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        except OSError as e:
            _remove_created(self._created)
            raise SnnconvError(f"{what} {path}: cannot write in {self.final.parent}: {e.strerror}") from None
        self.done = False

    def discard(self) -> None:
        if not self.done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            _remove_created(self._created)
            self.done = True

    def commit(self) -> Path:
        """Write the marker and move the finished folder into place (re-checking the destination)."""
        final = self.final
        write_marker(self.tmp, self.kind)
        mode = _default_mode()
        try:
            check_output_dir(final, self.overwrite, self.what, allow_kind=(self.kind,))
        except SnnconvError as e:  # the destination changed while we worked: keep both, delete nothing
            keep = Path(tempfile.mkdtemp(prefix=f"{final.name}.new-", dir=final.parent))
            os.rename(self.tmp, keep)
            self.done = True
            raise SnnconvError(f"{e}; the new output was kept in {keep}") from None
        if final.exists():
            mode = final.stat().st_mode & 0o7777
            if any(final.iterdir()):  # an earlier snnconv run, checked above: swap, then delete the old one
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
                os.rename(final, old)  # replaces the empty folder mkdtemp made
                os.rename(self.tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.tmp, final)  # an empty folder is replaced in one step
        else:
            os.rename(self.tmp, final)
        os.chmod(final, mode)
        self.done = True
        return final


def _committed(out):
    """Yield ``out.tmp``; discard it if the body raises (anything, Ctrl-C too), else commit it."""
    try:
        yield out.tmp
    except BaseException:
        out.discard()
        raise
    out.commit()


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False, kind: str = "run",
               what: str = "output folder") -> Iterator[Path]:
    """Check ``path`` now, yield a temporary folder to write into, move it into place on success.

    The check, the temporary folder and the missing parents are made when the ``with`` is entered,
    so open it *before* the long work (or call :func:`check_output_dir` first)."""
    yield from _committed(OutputDir(path, overwrite, kind, what))


def check_output_file(path: str | Path, overwrite: bool = False, what: str = "output file") -> Path:
    """Check that ``path`` may be written as a file: it is new, or ``overwrite`` and it is a regular file."""
    final = _abs(path, what)
    if final.is_symlink():
        raise SnnconvError(f"{what} {path}: is a symbolic link; snnconv does not write through links")
    if final.exists():
        if final.is_dir():
            raise SnnconvError(f"{what} {path}: is a folder, expected a file path")
        if not overwrite:
            raise SnnconvError(f"{what} {path}: exists; pass --overwrite to replace it")
    if final.name in ("", ".", ".."):
        raise SnnconvError(f"{what} {path}: not a file name")
    _check_parent(final, what, path)
    return final


class OutputFile:
    """A checked destination file with its uniquely named temporary file already made."""

    def __init__(self, path: str | Path, overwrite: bool = False, what: str = "output file"):
        self.what, self.overwrite = what, overwrite
        self.final = check_output_file(path, overwrite, what)
        self._created = _make_parents(self.final, what, path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent)
        except OSError as e:
            _remove_created(self._created)
            raise SnnconvError(f"{what} {path}: cannot write in {self.final.parent}: {e.strerror}") from None
        os.close(fd)
        self.tmp = Path(tmp)
        self.done = False

    def discard(self) -> None:
        if not self.done:
            self.tmp.unlink(missing_ok=True)
            _remove_created(self._created)
            self.done = True

    def commit(self) -> Path:
        try:
            check_output_file(self.final, self.overwrite, self.what)
        except SnnconvError:
            self.discard()
            raise
        os.chmod(self.tmp, 0o666 & _default_mode())
        os.replace(self.tmp, self.final)
        self.done = True
        return self.final


@contextlib.contextmanager
def atomic_file(path: str | Path, overwrite: bool = False, what: str = "output file") -> Iterator[Path]:
    """Check ``path`` now, yield a temporary file path to write, rename it over ``path`` on success."""
    yield from _committed(OutputFile(path, overwrite, what))


#: files a batch folder holds besides its item run folders
BATCH_FILES = (MARKER, "summary.json", "summary.md", "index.html")


def prepare_batch_dir(path: str | Path, reuse: bool = False) -> Path:
    """Check and create a ``snnconv batch`` folder; returns its absolute path.

    A batch folder holds the marker, the summary files and one run folder per item. An existing one
    is reused only with ``reuse`` (``--resume`` / ``--overwrite``) and only when everything in it is
    snnconv's; a folder of the user's is refused. Items are written with :func:`atomic_dir`."""
    what = "batch folder"
    final = _folder_target(path, what)
    if final.exists():
        if any(final.iterdir()):
            marker = read_marker(final)
            if marker is None or marker.get("kind") != "batch":
                raise SnnconvError(f"{what} {path}: exists and is not an snnconv batch folder (no batch {MARKER}); "
                                   f"choose a new folder")
            foreign = []
            for e in sorted(final.iterdir()):
                if e.name in BATCH_FILES:
                    continue
                if e.is_dir() and not e.is_symlink() and (read_marker(e) or {}).get("kind") == "run":
                    foreign += [f"{e.name}/{f}" for f in _foreign_entries(e)]  # an item's run folder
                else:
                    foreign.append(e.name)
            if foreign:
                raise SnnconvError(f"{what} {path}: holds '{foreign[0]}', which snnconv did not write; move it out "
                                   f"or choose a new folder")
            if not reuse:
                raise SnnconvError(f"{what} {path}: holds an earlier snnconv batch; pass --resume to continue it "
                                   f"or --overwrite to run its items again")
            return final
    else:
        _check_parent(final, what, path)
        created = _make_parents(final, what, path)
        try:
            final.mkdir()
        except OSError as e:
            _remove_created(created)
            raise SnnconvError(f"{what} {path}: cannot create it: {e.strerror}") from None
    write_marker(final, "batch")  # the folder is new or empty here: the marker lists no files
    return final


__all__ = ["MARKER", "atomic_dir", "atomic_file", "check_output_dir", "check_output_file", "read_marker",
           "write_marker", "OutputDir", "OutputFile", "prepare_batch_dir", "write_text_atomic"]
