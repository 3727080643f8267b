import { test } from "node:test";
import assert from "node:assert/strict";
import { scanPythonImports } from "./python-imports.js";

test("reads import forms, aliases, lists, parenthesized and continued statements", () => {
  const src = [
    "import os, sys as system",
    "import numpy as np, pandas",
    "from matplotlib import pyplot as plt",
    "from sklearn.model_selection import (",
    "    train_test_split,",
    "    KFold,",
    ")",
    "import a.b.c",
    "x = 1; import yaml",
    "if True: import requests",
    "try:",
    "    import ujson as json",
    "except ImportError:",
    "    import json",
    "from \\",
    "   bs4 import BeautifulSoup",
    "mod = __import__('cv2')",
    "import importlib; m = importlib.import_module(\"PIL.Image\")",
  ].join("\n");
  assert.deepEqual(scanPythonImports(src).modules, [
    "os", "sys", "numpy", "pandas", "matplotlib", "sklearn.model_selection", "a.b.c", "yaml", "requests", "ujson", "json", "bs4", "cv2", "importlib", "PIL.Image",
  ]);
});

test("never takes strings, docstrings or comments for imports", () => {
  const src = [
    '"""',
    "import notthis",
    '"""',
    "s = 'import nope'",
    "t = f\"from x import {y}\"",
    "# import commented",
    "r = r'''",
    "from also_not import x",
    "'''",
    "b = b\"import bytes_no\"",
    "print('it\\'s import nope2')",
    "def f():",
    "    '''from doc import x'''",
    "    return 1",
    "important = 3",
    "from_x = 4",
    "import real",
  ].join("\n");
  assert.deepEqual(scanPythonImports(src).modules, ["real"]);
});

test("relative imports are reported apart as workspace-local", () => {
  const r = scanPythonImports("from . import util\nfrom ..pkg.mod import thing as t, other\nfrom .x import *\n");
  assert.deepEqual(r.modules, []);
  assert.deepEqual(r.relative, [
    { level: 1, module: "", names: ["util"] },
    { level: 2, module: "pkg.mod", names: ["thing", "other"] },
    { level: 1, module: "x", names: ["*"] },
  ]);
});

test("a dynamic import of a computed name is not guessed", () => {
  assert.deepEqual(scanPythonImports("name = 'x'\n__import__(name)\nimportlib.import_module('a' + b)\n").modules, []);
});
