"""CPU seconds per process group, from /proc (Linux): what a bench's processes used in its timed part."""

from __future__ import annotations

import os
from pathlib import Path


def proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, cpu seconds (user+system), command name) for every process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parts = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(parts[1]), (int(parts[11]) + int(parts[12])) / ticks, name)
    return table


def cpu_seconds(roots: dict[str, int], *, database: str) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants, plus the PostgreSQL backends serving
    `database` (as "postgres") and Redis (shared with others: a rough figure)."""
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    used: dict[str, float] = {}
    for label, root in roots.items():
        stack, total = [root], 0.0
        while stack:
            pid = stack.pop()
            total += table.get(pid, (0, 0.0, ""))[1]
            stack.extend(children.get(pid, []))
        used[label] = total
    used["postgres"] = 0.0
    for pid, (_, cpu, name) in table.items():
        if name.startswith("postgres"):
            try:
                # "postgres: USER DATABASE HOST(PORT) STATE": the name as a word (one bench's database name may
                # begin another's)
                ours = database in (Path("/proc") / str(pid) / "cmdline").read_text(errors="replace").split()
            except OSError:
                ours = False
            used["postgres"] += cpu if ours else 0.0
    used["redis"] = sum(cpu for _, cpu, name in table.values() if name.startswith("redis"))
    return used
