// readme.mjs - checks that deploy/README.md's install steps work when followed top to bottom:
//
//   - every client whose key the guide makes (ferrulectl keygen) is written to the brokers'
//     "clients" and "policy" files before the Secret ferrule-access is made from them (a line that
//     appends to them afterwards never reaches the brokers);
//   - the "kubectl run ferrulectl" check passes the namespace's "restricted" Pod Security
//     Standard: its --overrides are JSON whose pod and container security contexts say so;
//
// and, given the rendered base (--rendered, with --modules for js-yaml), its other procedures:
//
//   - reloading a Secret the programs re-read on SIGHUP (ferrule-access, ferrule-gateway):
//     a code block recreates it in place and signals (or rolls) every workload that mounts it;
//     a workload left out keeps what the Secret said before (the gateways apply the policy too);
//   - the upgrade applies the programs in docs/operations.md's order (the migration Job, then
//     the workers, the brokers, the gateways), each only after the rollout of the one before was
//     waited for, and the workers' first apply takes the ConfigMaps they read.
//
//   node readme.mjs [--modules DIR --rendered BASE.yaml] README.md
//
// Prints one line per problem and exits 1 when there is any.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const argv = process.argv.slice(2);
const opt = {};
while (argv.length > 1 && argv[0].startsWith("--")) { opt[argv[0].slice(2)] = argv[1]; argv.splice(0, 2); }
const file = argv[0];
if (!file || (opt.rendered && !opt.modules)) { console.log("usage: node readme.mjs [--modules DIR --rendered BASE.yaml] README.md"); process.exit(2); }
const text = fs.readFileSync(file, "utf8");
const lines = text.split("\n");
let problems = 0;
const problem = (msg) => { console.log(`readme: ${file}: ${msg}`); problems++; };

// ---- the allow-lists are complete before ferrule-access is made ----
const create = lines.findIndex((l) => /create secret generic ferrule-access\b/.test(l) && !/--dry-run/.test(l));
if (create < 0) problem('no "kubectl create secret generic ferrule-access"');
for (const [i, l] of lines.entries()) {
  if (create >= 0 && i > create && />>?\s*(clients|policy)\b/.test(l) && !/^\s*#/.test(l))
    problem(`line ${i + 1} writes to the clients or policy file after ferrule-access was made from it (line ${create + 1}): "${l.trim()}"`);
}
// the clients the guide makes keys for, besides the brokers and the workers
const clients = new Set();
for (const l of lines) {
  const m = l.match(/for name in (.*); do/);
  if (m) for (const w of m[1].split(/\s+/)) if (/^[a-z][a-z0-9-]*$/.test(w) && w !== "broker") clients.add(w);
  const k = l.match(/ferrulectl keygen --out ([a-z][a-z0-9-]*)\b/);
  if (k) clients.add(k[1]);
}
const before = lines.slice(0, create < 0 ? lines.length : create);
for (const c of clients) {
  if (!before.some((l) => l.includes(`${c}.pub`) && /> *clients\b/.test(l)))
    problem(`the key "${c}" is made, but ${c}.pub is not written to the clients file before ferrule-access is made`);
  if (!before.some((l) => l.includes(`${c} * *`) && /> *policy\b/.test(l)))
    problem(`the client "${c}" has no line in the policy file before ferrule-access is made`);
}

// ---- kubectl run ferrulectl under the restricted Pod Security Standard ----
const run = text.match(/kubectl -n ferrule run ferrulectl[\s\S]*?--overrides='([^']*)'/);
if (!run) problem('no "kubectl -n ferrule run ferrulectl ... --overrides=\'...\'"');
else {
  let pod;
  try {
    pod = JSON.parse(run[1]);
  } catch (e) {
    problem(`the --overrides of "kubectl run ferrulectl" are not JSON: ${e.message}`);
  }
  if (pod) {
    const spec = pod.spec || {};
    const psc = spec.securityContext || {};
    const containers = spec.containers || [];
    if (containers.length === 0) problem("the --overrides of kubectl run ferrulectl name no container");
    for (const c of containers) {
      const sc = c.securityContext || {};
      const eff = (k) => (sc[k] !== undefined ? sc[k] : psc[k]);
      const where = `kubectl run ferrulectl: container "${c.name}"`;
      if (c.name !== "ferrulectl") problem(`${where}: kubectl run names its container "ferrulectl"; the overrides must too`);
      if (eff("runAsNonRoot") !== true) problem(`${where} does not set runAsNonRoot: true`);
      if (sc.allowPrivilegeEscalation !== false) problem(`${where} does not set allowPrivilegeEscalation: false`);
      if (!((sc.capabilities && sc.capabilities.drop) || []).includes("ALL")) problem(`${where} does not drop ALL capabilities`);
      const seccomp = eff("seccompProfile");
      if (!seccomp || !["RuntimeDefault", "Localhost"].includes(seccomp.type))
        problem(`${where} has no seccompProfile RuntimeDefault`);
    }
  }
}

// ---- procedures against the rendered base ----
// A Kubernetes label selector (kubectl -l): "k=v", "k==v", "k!=v", "k in (a,b)", "k notin (a,b)",
// "k", "!k", comma-separated. As the API server: "!=" and "notin" also take objects without k.
function selects(selector, labels) {
  const reqs = [];
  let depth = 0, cur = "";
  for (const ch of selector) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) { reqs.push(cur); cur = ""; } else cur += ch;
  }
  reqs.push(cur);
  return reqs.every((r) => {
    r = r.trim();
    let m;
    if ((m = r.match(/^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/))) {
      const set = m[3].split(",").map((x) => x.trim());
      const has = m[1] in labels && set.includes(labels[m[1]]);
      return m[2] === "in" ? has : !has;
    }
    if ((m = r.match(/^([\w./-]+)\s*!=\s*(\S*)$/))) return labels[m[1]] !== m[2];
    if ((m = r.match(/^([\w./-]+)\s*==?\s*(\S*)$/))) return labels[m[1]] === m[2];
    if ((m = r.match(/^!([\w./-]+)$/))) return !(m[1] in labels);
    if ((m = r.match(/^([\w./-]+)$/))) return m[1] in labels;
    problem(`cannot read the label selector "${selector}"`);
    return false;
  });
}
const selectorOf = (l) => {
  const m = l.match(/\s(?:-l|--selector)[= ](?:'([^']*)'|"([^"]*)"|([^\s);]+))/);
  return m ? (m[1] ?? m[2] ?? m[3]) : null;
};
// fenced code blocks: {start (line index), lines}
const blocks = [];
for (let i = 0, open = -1; i < lines.length; i++) {
  if (/^\s*```/.test(lines[i])) {
    if (open < 0) open = i;
    else { blocks.push({ start: open, lines: lines.slice(open + 1, i) }); open = -1; }
  }
}
// a block's lines with their continuations ("\" at the end) joined, comments dropped
const commands = (b) => {
  const out = [];
  let cur = "";
  for (const l of b.lines) {
    if (/^\s*#/.test(l)) continue;
    cur += l.replace(/\\\s*$/, " ");
    if (!/\\\s*$/.test(l)) { out.push(cur.replace(/\s+#.*$/, "")); cur = ""; }
  }
  if (cur) out.push(cur);
  return out;
};

if (opt.rendered) {
  const require = createRequire(path.join(path.resolve(opt.modules), "noop.js"));
  const yaml = require("js-yaml");
  const docs = yaml.loadAll(fs.readFileSync(opt.rendered, "utf8")).filter(Boolean);
  const workloads = docs.filter((d) => ["Deployment", "StatefulSet"].includes(d.kind));
  const podLabels = (w) => (w.spec.template.metadata && w.spec.template.metadata.labels) || {};
  const id = (w) => `${w.kind.toLowerCase()}/${w.metadata.name}`;

  // ---- every workload mounting a reloadable Secret is signalled or rolled after a change ----
  for (const secret of ["ferrule-access", "ferrule-gateway"]) {
    const mounting = workloads.filter((w) => (w.spec.template.spec.volumes || []).some((v) => v.secret && v.secret.secretName === secret));
    if (mounting.length === 0) continue;
    const recreate = blocks.filter((b) => commands(b).some((c) => new RegExp(`create secret generic ${secret}\\b.*--dry-run`).test(c)));
    if (recreate.length === 0) {
      problem(`no code block recreates the Secret "${secret}" in place (create ... --dry-run=client -o yaml | kubectl apply -f -) and reloads ${mounting.map(id).join(", ")}, which mount it`);
      continue;
    }
    for (const b of recreate) {
      const cmds = commands(b);
      const signalled = (w) => cmds.some((c) => {
        if (/\bkill -HUP 1\b/.test(c) || /\bget pods\b/.test(c)) {
          const sel = selectorOf(c);
          if (sel && /\bget pods\b/.test(c) && selects(sel, podLabels(w))) return true;
        }
        return /rollout restart/.test(c) && c.split(/\s+/).includes(id(w));
      });
      if (!cmds.some((c) => /\bkill -HUP 1\b/.test(c) || /rollout restart/.test(c)))
        problem(`line ${b.start + 1}: the block that recreates "${secret}" neither signals nor rolls the pods that mount it: they keep what it said before`);
      else
        for (const w of mounting)
          if (!signalled(w))
            problem(`line ${b.start + 1}: the block that recreates "${secret}" reloads no pod of ${id(w)}, which mounts it and reads it again only on SIGHUP`);
    }
  }

  // ---- the upgrade: the Job, then the workers, the brokers, the gateways, each waited for ----
  // docs/operations.md, "Upgrading"
  const ORDER = [
    { kind: "Job", name: "ferrule-migrate", done: /wait --for=condition=complete job\/ferrule-migrate\b/ },
    { kind: "StatefulSet", name: "ferrule-worker", done: /rollout status statefulset\/ferrule-worker\b/ },
    { kind: "Deployment", name: "ferrule-broker", done: /rollout status deployment\/ferrule-broker\b/ },
    { kind: "Deployment", name: "ferrule-gateway", done: /rollout status deployment\/ferrule-gateway\b/ },
  ];
  const heading = lines.findIndex((l) => /^## Upgrade\b/.test(l));
  const next = heading < 0 ? -1 : lines.findIndex((l, i) => i > heading && /^## /.test(l));
  const upgrade = blocks.filter((b) => heading >= 0 && b.start > heading && (next < 0 || b.start < next));
  if (upgrade.length === 0) problem('no code block under "## Upgrade"');
  const objLabels = (d) => (d.metadata && d.metadata.labels) || {};
  const applied = new Map();         // "Kind/name" -> index of the command that first applied it
  const waited = new Map();          // ORDER index -> index of the command that waited for it
  const cmds = upgrade.flatMap(commands);
  for (const [ci, c] of cmds.entries()) {
    if (/kubectl apply -k\b/.test(c)) {
      const sel = selectorOf(c);
      const taken = docs.filter((d) => !sel || selects(sel, objLabels(d)));
      for (const [k, step] of ORDER.entries()) {
        if (!taken.some((d) => d.kind === step.kind && d.metadata.name === step.name)) continue;
        if (applied.has(`${step.kind}/${step.name}`)) continue;
        applied.set(`${step.kind}/${step.name}`, ci);
        for (let j = 0; j < k; j++) {
          const before = ORDER[j];
          if (!applied.has(`${before.kind}/${before.name}`) || !waited.has(j) || waited.get(j) < applied.get(`${before.kind}/${before.name}`))
            problem(`the upgrade ("${c.trim()}") rolls ${step.kind}/${step.name} before ${before.kind}/${before.name} has rolled and been waited for ("${before.done.source.replace(/\\b/g, "").replace(/\\/g, "")}"): docs/operations.md upgrades the workers, then the brokers, then the gateways`);
        }
        // what the workload reads must come with it (the generated ConfigMaps carry no component)
        const spec = (docs.find((d) => d.kind === step.kind && d.metadata.name === step.name) || {}).spec;
        const pod = spec && spec.template && spec.template.spec;
        const cms = new Set();
        for (const ct of [...((pod && pod.containers) || []), ...((pod && pod.initContainers) || [])])
          for (const f of ct.envFrom || []) if (f.configMapRef) cms.add(f.configMapRef.name);
        for (const v of (pod && pod.volumes) || []) if (v.configMap) cms.add(v.configMap.name);
        for (const cm of cms)
          if (!taken.some((d) => d.kind === "ConfigMap" && d.metadata.name === cm) && !applied.has(`ConfigMap/${cm}`))
            problem(`the upgrade ("${c.trim()}") applies ${step.kind}/${step.name} without the ConfigMap "${cm}" it reads (a new pod would wait for a ConfigMap that is not there)`);
      }
      for (const d of taken) if (d.kind === "ConfigMap" && !applied.has(`ConfigMap/${d.metadata.name}`)) applied.set(`ConfigMap/${d.metadata.name}`, ci);
    }
    for (const [k, step] of ORDER.entries())
      if (step.done.test(c) && !waited.has(k) && applied.has(`${step.kind}/${step.name}`)) waited.set(k, ci);
  }
  for (const step of ORDER)
    if (!applied.has(`${step.kind}/${step.name}`)) problem(`the upgrade never applies ${step.kind}/${step.name}`);
}

if (problems === 0) console.log(`readme: ${file}: the install steps work in order, and the ferrulectl check passes the restricted Pod Security Standard${opt.rendered ? "; the reloads reach every pod that mounts the Secret, and the upgrade rolls the workers, the brokers and the gateways in turn" : ""}`);
process.exit(problems ? 1 : 0);
