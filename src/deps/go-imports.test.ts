import { test } from "node:test";
import assert from "node:assert/strict";
import { isGoStdlib, scanGoImports } from "./go-imports.js";

test("single and grouped imports, aliases, dot and blank imports; comments skipped", () => {
  const src = [
    "package main",
    "",
    "// import \"commented/out\"",
    'import "fmt"',
    "import (",
    '\t"net/http"',
    '\tyaml "gopkg.in/yaml.v3"',
    '\t. "github.com/x/dot"',
    '\t_ "github.com/lib/pq" // driver',
    "\t/* \"block.com/no\" */",
    ")",
    "",
    "func main() { fmt.Println(\"import \\\"not/this\\\"\") }",
  ].join("\n");
  assert.deepEqual(scanGoImports(src), ["fmt", "net/http", "gopkg.in/yaml.v3", "github.com/x/dot", "github.com/lib/pq"]);
});

test("standard library paths have no dot in their first element", () => {
  assert.equal(isGoStdlib("net/http"), true);
  assert.equal(isGoStdlib("golang.org/x/text"), false);
});
