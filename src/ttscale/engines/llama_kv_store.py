"""The embedded engine's host KV store on disk: llama.cpp slot snapshots as files.

llama.cpp's server saves a slot's KV state to a file (``/slots/{id}?action=save``) and loads one
into a slot (``action=restore``), under the directory given as ``slot_save_path``. This module
creates that directory (on tmpfs when it has room), moves snapshots in and out of slots as a
:class:`~ttscale.engines.kv_slots.SlotPlan` says, deletes evicted snapshot files, and removes the
directories that engines of dead processes left behind. What to save or restore, and when, is
planned by :class:`~ttscale.engines.kv_slots.SlotPlanner`; this module does the I/O.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import httpx

from ttscale.core.errors import EngineError
from ttscale.engines.kv_slots import SlotPlan, SlotPlanner
from ttscale.engines.llama_tokens import post_local

_PREFIX = "ttscale-kv-"


def make_store_dir(where: str | None, need: int) -> str:
    """A private directory for slot snapshots: ``where``, else /dev/shm (RAM) when it has room
    for the store, else the temporary directory."""
    if where is None:
        shm = "/dev/shm"
        try:
            if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= need:
                where = shm
        except OSError:
            pass
    remove_stale_stores(where or tempfile.gettempdir())
    try:
        return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=where)
    except OSError as e:
        raise EngineError(f"embedded engine: cannot create the KV store directory in {where!r}: {e}") from e


def remove_stale_stores(parent: str) -> None:
    """Delete KV store directories left by engines whose process died without closing them
    (tmpfs is RAM)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not name.startswith(_PREFIX) or len(parts) < 4 or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except OSError:
            pass  # alive (another user's) or unknown: leave it


class SnapshotFiles:
    """Saves and restores slot snapshots through llama.cpp's HTTP slot actions and keeps the
    planner's store index in step with the files. ``lock`` guards ``planner`` (shared with the
    engine, which plans and releases slots under it). When a save or restore fails the store is
    switched off with one warning; requests still run and recompute what they would have
    restored."""

    def __init__(self, http: httpx.Client, planner: SlotPlanner, lock: threading.Lock, directory: str | None) -> None:
        self._http = http
        self._slots = planner
        self._lock = lock
        self.directory = directory
        if directory is not None:
            weakref.finalize(self, shutil.rmtree, directory, True)

    def apply(self, plan: SlotPlan) -> None:
        """Save the booked slot's content and/or restore a snapshot into it, as planned."""
        if plan.save is not None:
            self.save(plan.slot, plan.save)
        if plan.restore is not None:
            self.restore(plan.slot, plan.restore)

    def save(self, slot: int, ids: tuple[int, ...]) -> None:
        """Snapshot ``slot`` (holding ``ids``) into the store; evicted snapshots are deleted."""
        with self._lock:
            if not self._slots.store_enabled:
                return
            name = self._slots.new_name()
        got = self._slot_action(slot, "save", name)
        if got is None:
            return
        n = int(got.get("n_saved", len(ids)))
        with self._lock:
            evicted = self._slots.add(ids[:n], name, int(got.get("n_written", 0)))
        self._remove(evicted)

    def restore(self, slot: int, key: tuple[int, ...]) -> None:
        """Load the snapshot stored under ``key`` into ``slot`` (on failure the slot is marked
        empty and the snapshot dropped)."""
        with self._lock:
            name = self._slots.name_of(key)
        got = self._slot_action(slot, "restore", name) if name is not None else None
        with self._lock:
            if got is None:
                self._slots.set_content(slot, (), continuable=False)
                dropped = self._slots.drop(key)
            else:
                self._slots.restored(slot, key[: int(got.get("n_restored", len(key)))])
                dropped = None
        if dropped:
            self._remove([dropped])

    def close(self) -> None:
        """Delete the directory and every snapshot in it."""
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _slot_action(self, slot: int, action: str, name: str) -> dict[str, Any] | None:
        try:
            r = post_local(self._http, f"/slots/{slot}", {"filename": name}, params={"action": action})
        except httpx.HTTPError as e:
            self._failed(f"slot {action} failed: {e}")
            return None
        if r.status_code != 200:
            self._failed(f"slot {action} returned {r.status_code}: {r.text[:200]}")
            return None
        return r.json()

    def _remove(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                os.remove(os.path.join(self.directory or "", name))
            except OSError:
                pass

    def _failed(self, why: str) -> None:
        with self._lock:
            was = self._slots.store_enabled
            self._slots.store_bytes = 0
        if was:
            warnings.warn(f"embedded engine: host KV store switched off: {why}", RuntimeWarning, stacklevel=2)
