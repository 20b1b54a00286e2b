#!/usr/bin/env python3
"""Bundle a tree of CommonJS modules into one plain browser script.

The dashboard loads third-party code without a JavaScript toolchain. Some of
that code (xterm.js as packaged by Debian) only exists as CommonJS modules,
which a browser cannot load directly. This script turns such a tree into a
single classic <script> file. control-plane/web/vendor/refresh.sh runs it;
its output is never edited by hand.

Usage:

    bundle-commonjs.py --root DIR --out FILE \\
        --expose NAME=MODULE[:EXPORT] [--expose ...] [--banner LINE ...]

  --root DIR      directory the module tree lives in (for xterm: its lib/).
                  Module keys are paths relative to it, with "/" separators,
                  e.g. "public/Terminal.js".
  --out FILE      where the bundle is written.
  --expose        after loading, set window.NAME to MODULE's exports, or to
                  the property EXPORT of them (e.g.
                  Terminal=public/Terminal.js:Terminal). Repeatable; the
                  exposed modules are the entry points of the bundle.
  --banner LINE   a line for the comment at the top of the bundle.
                  Repeatable.

What goes in: the exposed modules and everything they require, transitively,
found by reading the literal require("...") calls of each module. Only those
modules are bundled, in sorted key order, so the output depends only on the
input files and the arguments. Test modules (*.test.js) and source maps are
never bundled.

How a module is wrapped: its source, byte for byte, becomes the body of

    (function (exports, require, module) { ...source... })

called once, on first require, with `this` set to module.exports (as Node
does). A module's exports are cached, so cycles behave as in Node: a module
that is still loading hands out its partial exports.

How require() resolves: only relative requests ("./x", "../y/z") are
supported. The request is joined to the directory of the requiring module
and normalised; the first of PATH, PATH.js and PATH/index.js that is a
bundled module is loaded. The bundler applies the same rule when it builds
the bundle and fails if any request does not resolve, so a require of a Node
built-in, an npm package, a JSON file or a path outside --root stops the
build with a message naming the module and the request. A require() whose
argument is not a string literal also stops the build, since it cannot be
followed.

The bundle uses no eval and no Function constructor, only the function
wrappers above, so it runs under a Content-Security-Policy without
'unsafe-eval'. The bundler checks its output for both and refuses to write
it otherwise.
"""

import argparse
import json
import os
import re
import sys

LITERAL_REQUIRE = re.compile(r"""\brequire\s*\(\s*(['"])([^'"\\\n]+)\1\s*\)""")
ANY_REQUIRE = re.compile(r"\brequire\s*\(")
FORBIDDEN = [
    (re.compile(r"\beval\s*\("), "eval("),
    (re.compile(r"\bnew\s+Function\b"), "new Function"),
    (re.compile(r"(?<![\w$.])Function\s*\("), "Function("),
]
IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")

# The loader placed after the module table. Kept in step with resolve()
# below: both must pick the same module for the same request.
LOADER = r"""
  var hasOwn = Object.prototype.hasOwnProperty;
  var cache = {};

  function resolve(from, request) {
    if (request.slice(0, 2) !== './' && request.slice(0, 3) !== '../') {
      return null;
    }
    var parts = from.split('/');
    parts.pop();
    var segments = request.split('/');
    for (var i = 0; i < segments.length; i++) {
      var segment = segments[i];
      if (segment === '' || segment === '.') {
        continue;
      }
      if (segment === '..') {
        if (parts.length === 0) {
          return null;
        }
        parts.pop();
      } else {
        parts.push(segment);
      }
    }
    var path = parts.join('/');
    var candidates = [path, path + '.js', path + '/index.js'];
    for (var j = 0; j < candidates.length; j++) {
      if (hasOwn.call(definitions, candidates[j])) {
        return candidates[j];
      }
    }
    return null;
  }

  function load(key) {
    if (hasOwn.call(cache, key)) {
      return cache[key].exports;
    }
    var module = { id: key, exports: {} };
    cache[key] = module;
    var require = function (request) {
      var target = resolve(key, request);
      if (target === null) {
        throw new Error('Cannot find module "' + request + '" from "' + key + '"');
      }
      return load(target);
    };
    try {
      definitions[key].call(module.exports, module.exports, require, module);
    } catch (error) {
      delete cache[key];
      throw error;
    }
    return module.exports;
  }

  function expose(name, key, property) {
    var value = load(key);
    if (property !== null) {
      value = value[property];
    }
    if (value === undefined) {
      throw new Error('"' + key + '" does not export ' + (property === null ? 'anything' : '"' + property + '"'));
    }
    window[name] = value;
  }
"""


class BundleError(Exception):
    pass


def resolve(modules, from_key, request):
    """Same rule as resolve() in LOADER; returns a key or None."""
    if not (request.startswith("./") or request.startswith("../")):
        return None
    parts = from_key.split("/")[:-1]
    for segment in request.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(segment)
    path = "/".join(parts)
    for candidate in (path, path + ".js", path + "/index.js"):
        if candidate in modules:
            return candidate
    return None


class Tree:
    """The bundlable modules under root, read lazily."""

    def __init__(self, root):
        self.root = root
        self.sources = {}

    def __contains__(self, key):
        if key in self.sources:
            return True
        if not key.endswith(".js") or key.endswith(".test.js"):
            return False
        if key.startswith("/") or ".." in key.split("/"):
            return False
        return os.path.isfile(os.path.join(self.root, *key.split("/")))

    def source(self, key):
        if key not in self.sources:
            if key not in self:
                raise BundleError(f"no module {key!r} under {self.root}")
            path = os.path.join(self.root, *key.split("/"))
            with open(path, "rb") as f:
                raw = f.read()
            try:
                self.sources[key] = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BundleError(f"{key}: not UTF-8 ({error})") from None
        return self.sources[key]


def collect(tree, entries):
    """Keys of the entries and of everything they require, sorted."""
    seen = set()
    pending = list(entries)
    errors = []
    while pending:
        key = pending.pop()
        if key in seen:
            continue
        seen.add(key)
        text = tree.source(key)
        literal = LITERAL_REQUIRE.findall(text)
        if len(literal) != len(ANY_REQUIRE.findall(text)):
            errors.append(f"{key}: a require() whose argument is not a string literal")
        for _quote, request in literal:
            target = resolve(tree, key, request)
            if target is None:
                errors.append(
                    f"{key}: require({request!r}) does not resolve to a module under "
                    f"{tree.root} (Node built-ins and npm packages are not bundled)"
                )
            else:
                pending.append(target)
    if errors:
        raise BundleError("\n".join(sorted(set(errors))))
    return sorted(seen)


def parse_expose(spec):
    name, sep, rest = spec.partition("=")
    if not sep or not IDENTIFIER.match(name):
        raise BundleError(f"--expose {spec!r}: expected NAME=MODULE[:EXPORT]")
    key, sep, prop = rest.partition(":")
    if not key:
        raise BundleError(f"--expose {spec!r}: no module")
    if sep and not IDENTIFIER.match(prop):
        raise BundleError(f"--expose {spec!r}: export must be an identifier")
    return name, key, (prop if sep else None)


def render(tree, keys, exposes, banner):
    out = []
    out.append("/*\n")
    for line in banner:
        if "*/" in line:
            raise BundleError("a banner line may not contain */")
        out.append(f" * {line}\n" if line else " *\n")
    out.append(" * Each module below is wrapped unchanged in a function; see\n")
    out.append(" * control-plane/web/vendor/bundle-commonjs.py.\n")
    out.append(" */\n")
    out.append("(function () {\n")
    out.append("  var definitions = {};\n")
    for key in keys:
        out.append(f"\ndefinitions[{json.dumps(key)}] = (function (exports, require, module) {{\n")
        text = tree.source(key)
        out.append(text)
        if not text.endswith("\n"):
            out.append("\n")
        out.append("});\n")
    out.append(LOADER)
    out.append("\n")
    for name, key, prop in exposes:
        out.append(f"  expose({json.dumps(name)}, {json.dumps(key)}, {json.dumps(prop)});\n")
    out.append("})();\n")
    return "".join(out)


def main(argv):
    parser = argparse.ArgumentParser(
        description="Bundle CommonJS modules into one browser script (see the top of this file)."
    )
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--expose", action="append", required=True)
    parser.add_argument("--banner", action="append", default=[])
    args = parser.parse_args(argv)

    try:
        tree = Tree(args.root)
        exposes = [parse_expose(spec) for spec in args.expose]
        names = [name for name, _key, _prop in exposes]
        if len(set(names)) != len(names):
            raise BundleError("the same NAME is exposed twice")
        for _name, key, _prop in exposes:
            if key not in tree:
                raise BundleError(f"exposed module {key!r} is not a module under {args.root}")
        keys = collect(tree, [key for _name, key, _prop in exposes])
        bundle = render(tree, keys, exposes, args.banner)
        for pattern, label in FORBIDDEN:
            if pattern.search(bundle):
                raise BundleError(f"the bundle would contain {label}; refusing to write it")
    except BundleError as error:
        print(f"bundle-commonjs.py: {error}", file=sys.stderr)
        return 1

    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(bundle)
    print(f"bundle-commonjs.py: {len(keys)} modules -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
