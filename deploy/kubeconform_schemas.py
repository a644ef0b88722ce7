"""Standalone Kubernetes JSON schemas for kubeconform, from the kubernetes-validate package.

kubernetes-validate (PyPI) ships, per Kubernetes version, `v<X.Y.Z>-local[-strict]/` with one
schema per kind, `<kind>-<group>-<version>.json` (group without its domain: `apps`,
`networking`, `policy`; core kinds have none, `service-v1.json`), and a shared
`_definitions.json`. The kind schemas refer to it by an absolute URL
(`/api/_definitions.json#/$defs/...` against `$id: https://kubernetes.io/api/...`), which
kubeconform would try to download. This writes each kind again with the definitions it needs
(transitively) copied into its own `$defs` and the references made local:

    python kubeconform_schemas.py SCHEMAS_DIR 1.33.0 OUT_DIR
    -> OUT_DIR/v1.33.0-standalone-strict/deployment-apps-v1.json, ...

which kubeconform reads with `-schema-location` set to
    OUT_DIR/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/
        {{ .ResourceKind }}{{ .KindSuffix }}.json          (one line, no spaces)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REF_PREFIX = "/api/_definitions.json#/$defs/"  # in a kind's schema
LOCAL_PREFIX = "#/$defs/"  # inside _definitions.json, and in the output


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            for prefix in (REF_PREFIX, LOCAL_PREFIX):
                if ref.startswith(prefix):
                    found.add(ref[len(prefix) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _localise(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _localise(value) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            out["$ref"] = LOCAL_PREFIX + ref[len(REF_PREFIX) :]
        return out
    if isinstance(node, list):
        return [_localise(value) for value in node]
    return node


def standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the transitive closure of the definitions it uses inlined."""
    needed: set[str] = set()
    _refs(schema, needed)
    pending = list(needed)
    while pending:
        found: set[str] = set()
        _refs(definitions[pending.pop()], found)
        for name in found - needed:
            needed.add(name)
            pending.append(name)
    out: dict[str, Any] = _localise({k: v for k, v in schema.items() if k != "$id"})
    out["$defs"] = {name: _localise(definitions[name]) for name in sorted(needed)}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    source_root, version, out_root = Path(argv[1]), argv[2].removeprefix("v"), Path(argv[3])
    source = source_root / f"v{version}-local-strict"
    if not source.is_dir():
        known = sorted(p.name for p in source_root.iterdir() if p.name.endswith("-local-strict"))
        print(f"no schemas for Kubernetes {version}; the package has {known}", file=sys.stderr)
        return 1
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    out = out_root / f"v{version}-standalone-strict"
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.json")):
        if path.name.startswith("_"):
            continue
        schema = json.loads(path.read_text())
        (tmp / path.name).write_text(json.dumps(standalone(schema, definitions)))
    if out.exists():
        for stale in out.iterdir():
            stale.unlink()
        out.rmdir()
    tmp.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
