// dockerfile.mjs - reads deploy/docker/Dockerfile the way a reviewer would, since no Docker
// engine is at hand to build it: the context filter lets through what the build copies and keeps
// local secrets out, the build stage installs the -dev packages scripts/install-deps names and
// copies every directory CMake configures, and the runtime stage installs the packages that
// provide the libraries the programs link, runs as uid 10001 and has the four programs.
//
//   node dockerfile.mjs --modules DIR --root REPO [--runtime-packages "pkg ..."]
//
// --runtime-packages  Debian packages that provide the programs' NEEDED libraries (the test
//                     finds them with objdump and dpkg -S); each must be installed at runtime.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const args = process.argv.slice(2);
const opts = {};
for (let i = 0; i < args.length; i += 2) {
  if (!["--modules", "--root", "--runtime-packages"].includes(args[i]) || i + 1 >= args.length) {
    console.error(`dockerfile: unexpected argument "${args[i]}"`);
    process.exit(2);
  }
  opts[args[i].slice(2)] = args[i + 1];
}
const root = path.resolve(opts.root || ".");
const require = createRequire(path.join(path.resolve(opts.modules), "noop.js"));
const dockerignore = require("@balena/dockerignore");

const DOCKERFILE = "deploy/docker/Dockerfile";
const IGNOREFILE = "deploy/docker/Dockerfile.dockerignore";
const PROGRAMS = ["ferrule-broker", "ferrule-worker", "ferrule-migrate", "ferrulectl"];
let problems = 0;
const problem = (msg) => { console.log(`dockerfile: ${msg}`); problems++; };

// Instructions with continuation lines joined and comments dropped.
function instructions(text) {
  const out = [];
  let cur = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!cur && (line.startsWith("#") || line === "")) continue;
    if (line.startsWith("#")) continue;
    if (line.endsWith("\\")) { cur += line.slice(0, -1) + " "; continue; }
    cur += line;
    const m = cur.match(/^(\w+)\s+([\s\S]*)$/);
    if (m) out.push({ op: m[1].toUpperCase(), arg: m[2].trim() });
    cur = "";
  }
  return out;
}

const ins = instructions(fs.readFileSync(path.join(root, DOCKERFILE), "utf8"));
const stages = [];
for (const i of ins) {
  if (i.op === "FROM") stages.push({ from: i.arg, ins: [] });
  else if (stages.length) stages[stages.length - 1].ins.push(i);
}
if (stages.length !== 2) problem(`expected 2 stages (build, runtime), found ${stages.length}`);
const [build, runtime] = stages;

const aptPackages = (stage) => stage.ins.filter((i) => i.op === "RUN" && /apt-get install/.test(i.arg))
  .flatMap((i) => i.arg.split(/apt-get install/)[1].split("&&")[0].split(/\s+/))
  .filter((w) => w && !w.startsWith("-"));

// ---- build stage ----
if (build) {
  if (!/^\$\{DEBIAN_IMAGE\}|^debian:(12|bookworm)/.test(build.from) || !/AS build$/i.test(build.from))
    problem(`the build stage should be Debian 12 named "build": FROM ${build.from}`);
  const have = new Set(aptPackages(build));
  const deps = fs.readFileSync(path.join(root, "scripts/install-deps"), "utf8");
  const wanted = (deps.match(/PACKAGES=\(([\s\S]*?)\n\)/) || ["", ""])[1]
    .split("\n").map((l) => l.replace(/#.*/, "")).join(" ").split(/\s+/)
    .filter((p) => /-dev$/.test(p) || ["cmake", "gcc", "make", "pkg-config"].includes(p));
  for (const p of wanted) if (!have.has(p)) problem(`the build stage does not install ${p}, which scripts/install-deps lists`);
  const copied = new Set(build.ins.filter((i) => i.op === "COPY" && !/--from/.test(i.arg))
    .flatMap((i) => i.arg.split(/\s+/).slice(0, -1)).map((s) => s.replace(/\/$/, "")));
  const cmake = fs.readFileSync(path.join(root, "CMakeLists.txt"), "utf8");
  const subdirs = [...cmake.matchAll(/^\s*add_subdirectory\(\s*([\w./-]+)/gm)].map((m) => m[1]);
  for (const d of ["CMakeLists.txt", ...subdirs]) if (!copied.has(d)) problem(`the build stage does not COPY ${d}, which the top-level CMakeLists.txt needs`);
  const buildCmd = build.ins.filter((i) => i.op === "RUN").map((i) => i.arg).join(" ");
  for (const p of PROGRAMS) if (!buildCmd.includes(p)) problem(`the build stage does not build and install ${p}`);
}

// ---- runtime stage ----
if (runtime) {
  if (!/^\$\{DEBIAN_IMAGE\}|^debian:bookworm-slim/.test(runtime.from)) problem(`the runtime stage should be debian:bookworm-slim: FROM ${runtime.from}`);
  const have = new Set(aptPackages(runtime));
  for (const p of have) if (/-dev$/.test(p)) problem(`the runtime stage installs a -dev package: ${p}`);
  const needed = (opts["runtime-packages"] || "").split(/\s+/).filter(Boolean);
  for (const p of needed) if (!have.has(p)) problem(`the runtime stage does not install ${p}, which provides a library the programs link`);
  if (!have.has("ca-certificates")) problem("the runtime stage does not install ca-certificates (HTTPS to providers)");
  const users = runtime.ins.filter((i) => i.op === "USER").map((i) => i.arg);
  if (users.length === 0 || !/^10001(:10001)?$/.test(users[users.length - 1])) problem(`the runtime stage must end as USER 10001 (the manifests' runAsUser), not ${users.pop() || "root"}`);
  const copyOut = runtime.ins.filter((i) => i.op === "COPY" && /--from=build/.test(i.arg)).map((i) => i.arg);
  if (!copyOut.some((a) => /\/usr\/local\/bin\/?$/.test(a))) problem("the runtime stage does not copy the programs to /usr/local/bin");
  if (!runtime.ins.some((i) => i.op === "WORKDIR" && i.arg === "/var/lib/ferrule")) problem("the runtime stage has no WORKDIR /var/lib/ferrule");
  if (!runtime.ins.some((i) => i.op === "RUN" && /install -d .*10001.*\/var\/lib\/ferrule/.test(i.arg))) problem("the runtime stage does not create /var/lib/ferrule owned by 10001");
  if (runtime.ins.some((i) => i.op === "ADD")) problem("use COPY rather than ADD");
}
for (const s of stages)
  for (const i of s.ins)
    if (i.op === "RUN" && /apt-get install/.test(i.arg) && !(/--no-install-recommends/.test(i.arg) && /rm -rf \/var\/lib\/apt\/lists/.test(i.arg) && /apt-get update/.test(i.arg)))
      problem("every apt-get install should run with update, --no-install-recommends and remove the lists in the same layer");

// ---- the context filter ----
const ig = dockerignore({ ignorecase: false }).add(fs.readFileSync(path.join(root, IGNOREFILE), "utf8"));
const mustSend = ["CMakeLists.txt", "common/CMakeLists.txt", "broker/main.c", "worker/main.c", "worker/providers.json",
  "migrations/CMakeLists.txt", "migrations/001_token_store.sql", "ctl/CMakeLists.txt", "tests/CMakeLists.txt"];
for (const f of mustSend) if (ig.ignores(f)) problem(`${IGNOREFILE} leaves out ${f}, which the build needs`);
// every source file under the copied directories
const walk = (d) => fs.readdirSync(path.join(root, d), { withFileTypes: true }).flatMap((e) =>
  e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]);
for (const d of ["common", "broker", "worker", "migrations", "ctl", "tests"])
  for (const f of walk(d))
    if (/\.(c|h|sql|json|txt|sh)$/.test(f) && !/node_modules/.test(f) && ig.ignores(f)) problem(`${IGNOREFILE} leaves out ${f}`);
const mustNotSend = [".ferrule/encryption.key", ".ferrule/pg/postgresql.conf", ".ferrule-test/pg/PG_VERSION", "build/CMakeCache.txt",
  "build-asan/worker/ferrule-worker", ".git/config", "deploy/k8s/base/secret.template.yaml", "common/build/x.o"];
for (const f of mustNotSend) if (!ig.ignores(f)) problem(`${IGNOREFILE} sends ${f} to the builder`);

if (problems === 0) console.log(`dockerfile: ${DOCKERFILE} and ${IGNOREFILE} read correctly (${stages.length} stages)`);
process.exit(problems ? 1 : 0);
