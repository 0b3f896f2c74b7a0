"""pytest-xdist's `loadgroup` for pytest 9: tests marked `xdist_group(name)` go to one worker as one unit.

xdist 3.8 names a test's group by appending `@name` to the item's `_nodeid`; pytest 9 builds node ids from
`_id`, so the suffix never reaches the scheduler and every group was split across the workers (each worker
then built the group's module fixture: a sweep, a trained job, twice). Here each worker writes the groups it
collected to a file in a folder the controller made, and the controller's scheduler (xdist's LoadScope,
whose work units are whatever `_split_scope` returns) reads it. Workers collect before the scheduler runs,
so the file is complete when it is read; a test without a group is its own unit, as in `load` mode."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

KEY = "moirai_ft_groups_dir"


def configure_node(node) -> None:
    """Controller: the folder each worker writes its groups to (one per test run)."""
    config = node.config
    if not hasattr(config, "_moirai_ft_groups_dir"):
        config._moirai_ft_groups_dir = tempfile.mkdtemp(prefix="moirai-ft-xdist-groups-")
    node.workerinput[KEY] = config._moirai_ft_groups_dir


def publish(config, items) -> None:
    """Worker: {node id: group} for the tests that have one."""
    folder = getattr(config, "workerinput", {}).get(KEY)
    if folder is None:
        return
    groups = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None:
            groups[item.nodeid] = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    path = Path(folder) / f"{config.workerinput['workerid']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)


def make_scheduler(config, log):
    """Controller: the group-aware scheduler under --dist loadgroup (the suite's default under -n), else xdist's."""
    if config.option.dist != "loadgroup" or not hasattr(config, "_moirai_ft_groups_dir"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    folder = Path(config._moirai_ft_groups_dir)

    class GroupScheduling(LoadScopeScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # first called once every worker has collected (schedule())
                self._groups = {}
                for path in sorted(folder.glob("*.json")):
                    self._groups.update(json.loads(path.read_text()))
            group = self._groups.get(nodeid)
            return f"group:{group}" if group else nodeid

    return GroupScheduling(config, log)


def cleanup(config) -> None:
    folder = getattr(config, "_moirai_ft_groups_dir", None)
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
