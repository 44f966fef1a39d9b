"""Resumable result store: one JSON line per measured cell, keyed by (task, mode, cell).

A run appends each cell as soon as it is measured; a later run with the same output folder skips the
cells already there (same model, config fingerprint and cell), so an interrupted eval resumes.
"""
from __future__ import annotations

import json
import os
import pathlib


class Store:
    def __init__(self, path: os.PathLike):
        self.path = pathlib.Path(path)
        self.records: dict = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        rec = json.loads(line)
                        self.records[rec["key"]] = rec

    @staticmethod
    def key(task: str, mode: str, fingerprint: str, **cell) -> str:
        return json.dumps([task, mode, fingerprint, sorted(cell.items())])

    def get(self, key: str):
        return self.records.get(key)

    def put(self, key: str, record: dict) -> dict:
        record = {"key": key, **record}
        self.records[key] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def select(self, task: str) -> list:
        return [r for r in self.records.values() if r["task"] == task]
