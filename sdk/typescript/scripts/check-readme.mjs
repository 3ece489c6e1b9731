// Type-checks every ```ts snippet of README.md as its own module against the
// package's types (the snippets import from "latchgate").
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const root = fileURLToPath(new URL("..", import.meta.url));
const dir = join(root, ".readme-snippets");
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir);
const md = readFileSync(join(root, "README.md"), "utf8");
const blocks = [...md.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
blocks.forEach((code, i) => writeFileSync(join(dir, `snippet${i + 1}.ts`), code + "\nexport {};\n"));
writeFileSync(
  join(dir, "tsconfig.json"),
  JSON.stringify({ extends: "../tsconfig.json", compilerOptions: { noEmit: true, rootDir: ".." }, include: ["*.ts"] }),
);
try {
  execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", dir], { stdio: "inherit" });
  console.log(`README: ${blocks.length} TypeScript snippets type-check`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
