import fs from "node:fs";

/**
 * Test fixture (used by the walk, workspace and hostile-workspace tests): a chain of `depth`
 * directories named "d" below `root`, made by chdir because the path outgrows PATH_MAX, with an
 * optional file of `bytes` bytes at the bottom.
 */
export function deepChain(root: string, depth: number, leaf?: { name: string; bytes: number }): void {
  const start = process.cwd();
  try {
    process.chdir(root);
    for (let i = 0; i < depth; i++) {
      fs.mkdirSync("d");
      process.chdir("d");
    }
    if (leaf) fs.writeFileSync(leaf.name, Buffer.alloc(leaf.bytes, 1));
  } finally {
    process.chdir(start);
  }
}
