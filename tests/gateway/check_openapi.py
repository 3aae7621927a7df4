#!/usr/bin/env python3
"""The routes ferrule-gateway serves (--print-routes) equal the paths and methods of
docs/openapi.yaml, and the file is valid YAML and OpenAPI 3.1. Usage: check_openapi.py GATEWAY_BINARY OPENAPI_YAML"""
import subprocess
import sys

import yaml

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def spec_routes(path):
    """The document's OpenAPI version and its (METHOD, path) pairs, read by a YAML parser: a file
    that is not valid YAML fails here, as it would in any OpenAPI tool."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise SystemExit(f"{path}: not an OpenAPI document (no paths map)")
    routes = set()
    for route, ops in doc["paths"].items():
        for method in (ops or {}):
            if method in METHODS:
                routes.add((method.upper(), route))
    for key in ("info", "components"):
        if key not in doc:
            raise SystemExit(f"{path}: no {key}")
    return str(doc.get("openapi")), routes


def main():
    binary, spec = sys.argv[1], sys.argv[2]
    out = subprocess.run([binary, "--print-routes"], check=True, capture_output=True, text=True).stdout
    served = {tuple(line.split(" ", 1)) for line in out.splitlines() if line.strip()}
    version, documented = spec_routes(spec)
    ok = True
    if version != "3.1.0":
        print(f"{spec}: openapi is {version!r}, not 3.1.0")
        ok = False
    for method, path in sorted(served - documented):
        print(f"served but not in {spec}: {method} {path}")
        ok = False
    for method, path in sorted(documented - served):
        print(f"in {spec} but not served: {method} {path}")
        ok = False
    if not served:
        print("the gateway printed no routes")
        ok = False
    print(f"{len(served)} routes served, {len(documented)} documented")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
