// Checks what `npm pack` would publish: every compiled module with its type
// declarations, the README, and no tests, sources or examples.

import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";

const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const [report] = JSON.parse(execFileSync(npm, ["pack", "--dry-run", "--json"], { encoding: "utf8" }));
const files = new Set(report.files.map((file) => file.path));
const problems = [];

const modules = readdirSync("src")
  .filter((name) => name.endsWith(".ts"))
  .map((name) => name.slice(0, -3));
for (const module of modules) {
  for (const path of [`dist/${module}.js`, `dist/${module}.d.ts`]) {
    if (!files.has(path)) problems.push(`missing ${path}`);
  }
}
for (const path of ["package.json", "README.md"]) {
  if (!files.has(path)) problems.push(`missing ${path}`);
}
for (const path of files) {
  if (/^(test|src|examples|scripts|node_modules)\//.test(path) || /\.test\./.test(path)) {
    problems.push(`should not be packed: ${path}`);
  }
}

if (problems.length > 0) {
  console.error(`${report.filename}:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(
  `${report.filename}: ${files.size} files, ${report.size} bytes packed; ${modules.length} modules with .js and .d.ts`,
);
