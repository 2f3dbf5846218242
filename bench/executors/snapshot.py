"""A frozen copy of the code per sweep, so edits made after submitting never reach queued jobs.

Jobs start in `output/slurm/snapshot-<hash>/` with it first on PYTHONPATH, so `bench`, `methods`
and `baselines` are imported from the copy. In a git checkout the copy is a shallow clone of
HEAD with the working tree's files laid over it: the records' provenance (commit, dirty flag)
then describes the code the job really ran. The hash covers the files and the commit, so an
unchanged tree reuses its snapshot.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import bench
from bench.store import current_umask, public_mode

PACKAGES = ("bench", "methods", "baselines")
REPO = Path(bench.__file__).resolve().parents[1]


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                           timeout=60).stdout


def _head() -> str | None:
    """HEAD's commit if the code is a git checkout with at least one commit, else None."""
    try:
        if _git("rev-parse", "--show-toplevel").strip() != str(REPO):
            return None
        return _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _files(git: bool) -> list[str]:
    """Relative paths to copy: tracked files as they are now, plus new files in the packages."""
    if git:
        tracked = _git("ls-files", "-z", "--cached").split("\0")
        new = _git("ls-files", "-z", "--others", "--exclude-standard", "--", *PACKAGES).split("\0")
        names = {n for n in tracked + new if n}
    else:
        names = {str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    return sorted(n for n in names if (REPO / n).is_file())


def _digest(files: list[str], commit: str) -> str:
    h = hashlib.sha256(commit.encode())
    for name in files:
        h.update(name.encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def make_snapshot(output: str | Path) -> Path:
    """The snapshot folder for the code as it is now (created once per distinct code state)."""
    head = _head()
    git = head is not None
    commit = head or "no-git"
    files = _files(git)
    dest = Path(output) / "slurm" / f"snapshot-{_digest(files, commit)}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-snapshot-", dir=dest.parent))
    try:
        public_mode(tmp, folder=True)  # mkdtemp's 0700 would hide the snapshot from labmates
        if git:
            shutil.rmtree(tmp)
            _git("clone", "--quiet", "--depth", "1", "--no-hardlinks", f"file://{REPO}", str(tmp))
            for name in _git("ls-files", "-z", cwd=tmp).split("\0"):
                if name and name not in files:  # deleted in the working tree: deleted here too
                    (tmp / name).unlink(missing_ok=True)
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp / name)
            (tmp / name).chmod((REPO / name).stat().st_mode & 0o777 & ~current_umask())
        tmp.rename(dest)
    except (OSError, subprocess.SubprocessError):
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # a concurrent `bench run` may have won the rename
            raise
    return dest
