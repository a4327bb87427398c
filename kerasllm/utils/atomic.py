"""Crash-safe file writes: fill a temporary folder, fsync it, rename it into place, fsync the parent."""

import contextlib
import os
import shutil

TEMP_PREFIX = ".tmp-"


def fsync_path(path):
    """Flushes a file or a folder (its entries) to disk; folders are skipped where the OS refuses."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(final_path):
    """The temporary sibling `parent/.tmp-NAME-PID` that `atomic_directory` fills for `final_path`."""
    parent, name = os.path.split(os.path.abspath(final_path))
    return os.path.join(parent, f"{TEMP_PREFIX}{name}-{os.getpid()}")


def remove_stray_temporaries(directory):
    """Deletes the temporary folders a killed writer left in `directory`; returns their names."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if name.startswith(TEMP_PREFIX):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_directory(final_path):
    """Yields a temporary folder that appears at `final_path` complete, or not at all.

    On leaving the block without an error every file in the folder and the folder itself are
    fsynced, the folder is renamed to `final_path` (one `os.rename`, atomic on POSIX file systems)
    and the parent folder is fsynced so the rename survives a power cut. An existing `final_path`
    is replaced only after the new folder is complete. On an error the temporary folder is removed.
    A process killed inside the block leaves only `parent/.tmp-*`, which `remove_stray_temporaries`
    cleans.
    """
    final_path = os.path.abspath(final_path)
    parent = os.path.dirname(final_path)
    os.makedirs(parent, exist_ok=True)
    temp = temporary_path(final_path)
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    try:
        yield temp
        for root, _, files in os.walk(temp):
            for name in files:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
        if os.path.exists(final_path):
            # `os.rename` cannot replace a non-empty folder: move the old one aside first.
            old = f"{temp}-old"
            os.rename(final_path, old)
            os.rename(temp, final_path)
            fsync_path(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, final_path)
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
