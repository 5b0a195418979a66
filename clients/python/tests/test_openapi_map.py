"""Every operation in docs/openapi.yaml maps to an SDK method, and every
mapping names a method that exists: a route added to the API without a
method here fails this test. The YAML is read with the standard library
(the file's own layout: `  /path:` at two spaces, methods at four,
`operationId:` at six)."""
from __future__ import annotations

import os
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import sandboxd  # noqa: E402

SPEC = os.environ.get("SANDBOXD_OPENAPI") or os.path.join(HERE, "..", "..", "..", "docs", "openapi.yaml")

# operationId -> "Class.method" of the SDK that makes that call.
MAPPING = {
    "getHealthz": "Sandboxd.healthz",
    "getMetrics": "Sandboxd.metrics",
    "createSandbox": "Sandboxes.create",
    "listSandboxes": "Sandboxes.list",
    "getSandbox": "Sandboxes.get",
    "deleteSandbox": "Sandboxes.delete",
    "stopSandbox": "Sandbox.stop",
    "startSandbox": "Sandbox.start",
    "listWorkspace": "Files.list",
    "putFile": "Files.write",
    "getFile": "Files.read",
    "deleteFile": "Files.remove",
    "execCommand": "Sandbox.exec",
    "createTask": "Tasks.run",
    "listTasks": "Tasks.list",
    "getTask": "Tasks.get",
    "getTaskEvents": "Task.events",
    "cancelTask": "Task.cancel",
    "revertTask": "Task.revert",
    "openTerminal": "Sandbox.terminal",
    "getDevLogs": "Sandbox.logs",
    "restartDevServer": "Sandbox.restart_dev",
    "createPreviewToken": "Sandbox.preview_token",
}


def operations(path: str) -> list:
    """[(method, path, operationId)] under `paths:`."""
    ops = []
    in_paths = False
    cur_path = cur_method = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if re.match(r"^\S", line):
                in_paths = line.startswith("paths:")
                continue
            if not in_paths:
                continue
            m = re.match(r"^  (/\S*):\s*$", line)
            if m:
                cur_path, cur_method = m.group(1), None
                continue
            m = re.match(r"^    (get|put|post|delete|patch|head|options|trace):\s*$", line)
            if m:
                cur_method = m.group(1).upper()
                continue
            m = re.match(r"^      operationId:\s*(\S+)\s*$", line)
            if m and cur_path and cur_method:
                ops.append((cur_method, cur_path, m.group(1)))
    return ops


class TestOpenAPIMapping(unittest.TestCase):
    def test_every_operation_has_a_method(self) -> None:
        if not os.path.exists(SPEC):
            self.skipTest("no docs/openapi.yaml at %s" % SPEC)
        ops = operations(SPEC)
        self.assertGreaterEqual(len(ops), 20, "the parser found the operations: %r" % ops)
        with open(SPEC, encoding="utf-8") as f:
            self.assertEqual(len(ops), f.read().count("operationId:"), "every operationId was read")
        unmapped = ["%s %s (%s)" % o for o in ops if o[2] not in MAPPING]
        self.assertEqual(unmapped, [], "operations with no SDK method")
        stale = sorted(set(MAPPING) - {o[2] for o in ops})
        self.assertEqual(stale, [], "mapped operations the file no longer has")

    def test_every_mapped_method_exists(self) -> None:
        for op, target in MAPPING.items():
            cls, meth = target.split(".")
            with self.subTest(op=op):
                self.assertTrue(callable(getattr(getattr(sandboxd, cls), meth, None)), target)


if __name__ == "__main__":
    unittest.main()
