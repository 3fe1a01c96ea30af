// Checks objects against the schemas npm packages carry, two ways each:
// - Kubernetes objects (core, apps, policy; and the pod templates inside a
//   LeaderWorkerSet) by kubernetes-models: its ajv validator of the
//   Kubernetes OpenAPI schema (types, formats, required fields), and its
//   TypeScript interfaces, which also refuse unknown fields, as kubectl's
//   strict field validation does;
// - Grafana dashboards against @grafana/schema's Dashboard type.
// Types are checked by compiling one TypeScript file per entry with tsc.
//
// usage: node check.mjs ENTRIES.json WORKDIR
//   ENTRIES.json: [{"where": "...", "type": "k8s" | "podtemplate" | "dashboard",
//                   "expect": "valid" | "invalid", "object": {...}}, ...]
//   WORKDIR: an empty folder (this folder's node_modules is linked into it)
// Every "valid" entry must pass both checks and every "invalid" one (the
// test's broken copies) must fail one; exits 1 otherwise.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [entriesPath, work] = process.argv.slice(2);
const entries = JSON.parse(fs.readFileSync(entriesPath, "utf8"));

// apiVersion "apps/v1" kind "Deployment" -> module "kubernetes-models/apps/v1/Deployment".
function modelOf(entry) {
  if (entry.type === "podtemplate") return { module: "kubernetes-models/v1/PodTemplateSpec", name: "PodTemplateSpec" };
  const { apiVersion, kind } = entry.object;
  if (!["v1", "apps/v1", "policy/v1"].includes(apiVersion)) return null;
  return { module: `kubernetes-models/${apiVersion}/${kind}`, name: kind };
}

const problems = new Map(entries.map((_, i) => [i, []]));

// 1. The OpenAPI validator, at run time.
for (const [i, e] of entries.entries()) {
  if (e.type === "dashboard") continue;
  const m = modelOf(e);
  if (!m) {
    problems.get(i).push(`no Kubernetes schema for ${e.object.apiVersion} ${e.object.kind}`);
    continue;
  }
  let Model;
  try {
    Model = (await import(m.module))[m.name];
  } catch (err) {
    problems.get(i).push(`no model ${m.module}: ${err.message}`);
    continue;
  }
  try {
    new Model(e.object).validate();
  } catch (err) {
    problems.get(i).push(`OpenAPI schema: ${err.message}`);
  }
}

// 2. The TypeScript types: one file per entry, so each error names its entry.
fs.symlinkSync(path.join(here, "node_modules"), path.join(work, "node_modules"), "dir");
const files = [];
for (const [i, e] of entries.entries()) {
  let head;
  if (e.type === "dashboard") {
    head = 'import type { Dashboard } from "@grafana/schema";\nexport const value: Dashboard = ';
  } else {
    const m = modelOf(e);
    if (!m) continue;
    head = `import type { I${m.name} } from "${m.module}";\nexport const value: I${m.name} = `;
  }
  const file = path.join(work, `entry${i}.ts`);
  fs.writeFileSync(file, `${head}${JSON.stringify(e.object, null, 1)};\n`);
  files.push(file);
}
const tsc = path.join(here, "node_modules/typescript/bin/tsc");
let output = "";
try {
  execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022",
    "--module", "esnext", "--moduleResolution", "bundler", ...files], { cwd: work, encoding: "utf8" });
} catch (err) {
  output = `${err.stdout || ""}${err.stderr || ""}`;
}
for (const line of output.split("\n")) {
  const m = /entry(\d+)\.ts\((\d+),\d+\): (error .*)/.exec(line);
  if (m) problems.get(Number(m[1])).push(`TypeScript type (line ${m[2]}): ${m[3]}`);
  else if (line.trim() && !/^\s/.test(line)) console.error(`tsc: ${line}`);
}

let valid = 0, rejected = 0, failed = 0;
for (const [i, e] of entries.entries()) {
  const found = problems.get(i);
  if (e.expect === "valid" && found.length === 0) {
    valid++;
  } else if (e.expect === "invalid" && found.length > 0) {
    rejected++;
    console.log(`rejected, as it should be: ${e.where}: ${found[0].split("\n")[0].slice(0, 200)}`);
  } else {
    failed++;
    console.log(`FAIL ${e.where}: expected ${e.expect}` + (found.length ? `, got:\n  ${found.join("\n  ")}` : ", but every check passed"));
  }
}
console.log(`npm schemas: ${valid} objects valid, ${rejected} broken copies rejected, ${failed} wrong`);
process.exit(failed === 0 ? 0 : 1);
