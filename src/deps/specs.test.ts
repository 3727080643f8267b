import { test } from "node:test";
import assert from "node:assert/strict";
import { PetriError } from "../errors.js";
import {
  mergeRequirements, parseDeclared, parseGoMod, parseGoSpec, parseNpmSpec, parsePackageJson, parsePyproject, parsePythonRequirement, parseRequirementsTxt,
} from "./specs.js";

function refused(fn: () => unknown, code = "DEPENDENCY_INVALID"): void {
  assert.throws(fn, (e: unknown) => e instanceof PetriError && e.code === code && e.status === 400);
}

test("Python requirements are normalized; extras, specifiers and markers kept", () => {
  assert.deepEqual(parsePythonRequirement("Pandas>=2"), { name: "pandas", spec: "pandas>=2", range: ">=2" });
  assert.equal(parsePythonRequirement("scikit_learn[alldeps] >= 1.3, < 2").spec, "scikit-learn[alldeps]>=1.3,<2");
  assert.equal(parsePythonRequirement('requests ; python_version >= "3.8"').spec, 'requests ; python_version >= "3.8"');
  assert.equal(parsePythonRequirement("numpy==2.2.*").range, "==2.2.*");
});

test("npm specs: names, scoped names, ranges and dist-tags", () => {
  assert.deepEqual(parseNpmSpec("lodash@4"), { name: "lodash", spec: "lodash@4", range: "4" });
  assert.deepEqual(parseNpmSpec("@types/node@^20.1.0"), { name: "@types/node", spec: "@types/node@^20.1.0", range: "^20.1.0" });
  assert.equal(parseNpmSpec("dayjs").spec, "dayjs");
  assert.equal(parseNpmSpec("react@next").range, "next");
});

test("Go module specs", () => {
  assert.deepEqual(parseGoSpec("golang.org/x/text@v0.14.0"), { name: "golang.org/x/text", spec: "golang.org/x/text@v0.14.0", range: "v0.14.0" });
  assert.equal(parseGoSpec("github.com/google/uuid").range, "");
});

test("URLs, paths, VCS references and installer options are refused with 400", () => {
  for (const s of ["--index-url=https://evil.example/simple", "-r other.txt", "-e .", "../x", "./pkg", "/abs/pkg", "~/pkg",
    "git+https://github.com/x/y", "https://evil.example/x.whl", "pkg @ https://evil.example/x.whl", "file:../x", "pkg\n--extra-index-url x", "C:\\x"]) {
    refused(() => parsePythonRequirement(s));
  }
  for (const s of ["file:../x", "git+ssh://git@github.com/x/y.git", "github:user/repo", "user/repo", "lodash@file:../x", "lodash@https://evil.example/x.tgz",
    "--registry=https://evil.example", "lodash@git+https://x", "link:../y", "npm:other@1", "Upper", "lodash@>=<bad"]) {
    refused(() => parseNpmSpec(s));
  }
  for (const s of ["../mod", "example.com/../x", "github.com/x/y@master; rm -rf /", "-insecure", "https://github.com/x/y"]) refused(() => parseGoSpec(s));
});

test("a dependencies object: known ecosystems and lists only", () => {
  assert.deepEqual(parseDeclared({ python: ["pandas>=2"], node: ["lodash@4"] }).node?.[0].name, "lodash");
  refused(() => parseDeclared({ ruby: ["rails"] }), "VALIDATION_ERROR");
  refused(() => parseDeclared({ python: "pandas" }), "VALIDATION_ERROR");
  refused(() => parseDeclared(["pandas"]), "VALIDATION_ERROR");
});

test("workspace manifests: requirements.txt, pyproject.toml, package.json, go.mod", () => {
  assert.deepEqual(parseRequirementsTxt("# data\npandas>=2  # comment\n\nrequests\\\n  ==2.31.0\n").map((r) => r.spec), ["pandas>=2", "requests==2.31.0"]);
  refused(() => parseRequirementsTxt("pandas\n--index-url https://evil.example/simple\n"));
  refused(() => parseRequirementsTxt("-r other.txt\n"));
  assert.deepEqual(parsePyproject('[project]\nname = "x"\ndependencies = ["httpx>=0.27", "rich"]\n').map((r) => r.name), ["httpx", "rich"]);
  refused(() => parsePyproject("[project\n"));
  assert.deepEqual(parsePackageJson('{"dependencies": {"lodash": "^4.17.21", "dayjs": "*"}}').map((r) => r.spec), ["lodash@^4.17.21", "dayjs"]);
  refused(() => parsePackageJson('{"dependencies": {"x": "file:../x"}}'));
  refused(() => parsePackageJson('{"dependencies": {"x": "github:a/b"}}'));
  assert.deepEqual(parseGoMod("module m\n\ngo 1.22\n\nrequire (\n\tgithub.com/google/uuid v1.6.0 // indirect\n\tgolang.org/x/text v0.14.0\n)\nrequire gopkg.in/yaml.v3 v3.0.1\n").map((r) => r.spec),
    ["github.com/google/uuid@v1.6.0", "golang.org/x/text@v0.14.0", "gopkg.in/yaml.v3@v3.0.1"]);
  refused(() => parseGoMod("module m\nreplace example.com/a => ../a\n"));
});

test("merging: a declared constraint wins over an unversioned detection", () => {
  const m = mergeRequirements([parsePythonRequirement("pandas>=2")], [parsePythonRequirement("pandas"), parsePythonRequirement("numpy")]);
  assert.deepEqual(m.map((r) => r.spec), ["numpy", "pandas>=2"]);
});
