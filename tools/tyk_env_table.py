#!/usr/bin/env python3
"""Generates src/config/env_table.rs: every TYK_GW_* name Tyk's envconfig
derives from its `config.Config` (Go field names upper-cased, joined by `_`;
an embedded struct adds no segment), with the JSON path the field is read
from and the Go type that decides how the value is parsed.

Usage: tools/tyk_env_table.py TYK_REPO_GIT_DIR > src/config/env_table.rs
(reads config/*.go at HEAD through `git show`, nothing else).
"""
import re
import subprocess
import sys

GIT = sys.argv[1]
FILES = ["config/config.go", "config/rate_limit.go", "config/external_service.go",
         "config/kv.go", "config/development_off.go", "config/private.go"]

src = ""
for f in FILES:
    src += subprocess.run(["git", "--git-dir", GIT, "show", "HEAD:" + f],
                          check=True, capture_output=True, text=True).stdout + "\n"
rev = subprocess.run(["git", "--git-dir", GIT, "rev-parse", "--short", "HEAD"],
                     check=True, capture_output=True, text=True).stdout.strip()

# Types with a Decode method (envconfig.Decoder): the value is JSON.
decoders = set(re.findall(r"func \(\w+ \*(\w+)\) Decode\(value string\) error", src))

def struct_bodies(text):
    """name -> list of body lines, for `type X struct {` (nested braces ok)."""
    out = {}
    for m in re.finditer(r"^type (\w+) struct \{", text, re.M):
        depth, i = 1, m.end()
        while depth:
            c = text[i]
            depth += c == "{"
            depth -= c == "}"
            i += 1
        out[m.group(1)] = text[m.end():i - 1]
    return out

structs = struct_bodies(src)
named = dict(re.findall(r"^type (\w+) (\[\]\w+|map\[[^\]]+\][\w.{}]+|\w+)\s*$", src, re.M))

def fields(body):
    """(go name or None if embedded, type text, json tag, ignored?, inline body)"""
    lines = body.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].split("//")[0].rstrip() if "`" not in lines[i] else lines[i]
        s = line.strip()
        i += 1
        if not s or s.startswith("//"):
            continue
        m = re.match(r"^(\w+) struct \{$", s)
        if m:  # inline struct: collect until the matching close
            depth, inner = 1, []
            while depth:
                t = lines[i]
                i += 1
                depth += t.count("{") - t.count("}")
                inner.append(t)
            tag = re.search(r'json:"([^"]*)"', inner[-1])
            yield m.group(1), "struct", tag.group(1) if tag else "", False, "\n".join(inner[:-1])
            continue
        m = re.match(r"^(\w+)\s+([^\s`]+)\s*(`[^`]*`)?", s)
        if m and not s.startswith("func"):
            tag = m.group(3) or ""
            j = re.search(r'json:"([^"]*)"', tag)
            yield (m.group(1), m.group(2), j.group(1) if j else None,
                   'ignored:"true"' in tag, None)
            continue
        m = re.match(r"^\*?(\w+)$", s)
        if m:
            yield None, m.group(1), None, False, None

SCALARS = {
    "bool": "Bool", "string": "Str",
    "int": "Int(64)", "int64": "Int(64)", "int32": "Int(32)", "int16": "Int(16)", "int8": "Int(8)",
    "uint": "Uint(64)", "uint64": "Uint(64)", "uint32": "Uint(32)", "uint16": "Uint(16)", "uint8": "Uint(8)",
    "float64": "Float", "float32": "Float", "time.Duration": "Duration",
}
STRINGISH = {"logger.Format", "IPsHandleStrategy", "PolicySource", "RateLimitSource"}

def kind(t):
    t = t.lstrip("*")
    if t in decoders:
        return "Json"
    if t in SCALARS:
        return SCALARS[t]
    if t in STRINGISH or named.get(t) == "string":
        return "Str"
    if t in named and t not in structs:
        return kind(named[t])
    if t.startswith("[]"):
        e = kind(t[2:])
        return f"List(&{e})" if e in ("Str", "Bool", "Float", "Duration") or e.startswith(("Int", "Uint")) else "Json"
    if t.startswith("map["):
        k, v = re.match(r"map\[([^\]]+)\](.+)", t).groups()
        return "Map" if kind(k) == "Str" and kind(v) == "Str" else "Json"
    return None

rows, skipped = [], []

def walk(body, env, path):
    for name, typ, tag, ignored, inline in fields(body):
        if ignored:
            continue
        key = (tag or "").split(",")[0]
        if key == "-":
            continue
        bare = typ.lstrip("*")
        if name is None:  # embedded: no segment of its own
            if bare in structs:
                walk(structs[bare], env, path)
            else:
                skipped.append(f"{'_'.join(env) or '(root)'} embeds {typ}")
            continue
        key = key or name
        e, p = env + [name.upper()], path + [key]
        if inline is not None:
            walk(inline, e, p)
            continue
        k = kind(typ)
        if k is None and bare in structs and bare not in decoders:
            walk(structs[bare], e, p)
        elif k is None:
            skipped.append(f"TYK_GW_{'_'.join(e)} ({typ})")
        else:
            rows.append(("_".join(e), p, k))

walk(structs["Config"], [], [])
# `opentelemetry` is otel.OpenTelemetry, defined outside `config/`; these two
# are the names Tyk's own tests set (config_test.go), kept by hand.
rows += [("OPENTELEMETRY_ENABLED", ["opentelemetry", "enabled"], "Bool"),
         ("OPENTELEMETRY_TRACES_ENABLED", ["opentelemetry", "traces", "enabled"], "Bool")]
rows.sort()

print(f"//! Generated by `tools/tyk_env_table.py` from Tyk's `config/` at {rev}:")
print("//! every `TYK_GW_*` name envconfig derives from Tyk's `Config`, the JSON")
print("//! path the field is read from, and the Go type that decides the parsing.")
print("//! Do not edit by hand: run the script again.")
for s in skipped:
    print(f"//! Not listed (type outside `config/`): {s}")
print()
print("use super::env::{Field, Kind::*};")
print()
print("#[rustfmt::skip]")
print("pub(super) static FIELDS: &[Field] = &[")
for env, path, k in rows:
    p = ", ".join(f'"{x}"' for x in path)
    print(f'    Field::new("{env}", &[{p}], {k}),')
print("];")
