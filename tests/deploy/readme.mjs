// readme.mjs - checks that deploy/README.md's install steps work when followed top to bottom:
//
//   - every client whose key the guide makes (ferrulectl keygen) is written to the brokers'
//     "clients" and "policy" files before the Secret ferrule-access is made from them (a line that
//     appends to them afterwards never reaches the brokers);
//   - the "kubectl run ferrulectl" check passes the namespace's "restricted" Pod Security
//     Standard: its --overrides are JSON whose pod and container security contexts say so.
//
//   node readme.mjs README.md
//
// Prints one line per problem and exits 1 when there is any.
import fs from "node:fs";

const file = process.argv[2];
if (!file) { console.log("usage: node readme.mjs README.md"); process.exit(2); }
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

if (problems === 0) console.log(`readme: ${file}: the install steps work in order, and the ferrulectl check passes the restricted Pod Security Standard`);
process.exit(problems ? 1 : 0);
