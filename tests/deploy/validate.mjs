// validate.mjs - checks rendered Kubernetes manifests offline: every object against the API
// schema of its kind (kubernetes-models), fields the schema does not know, and Ferrule's own
// rules (resources, probes, security context, secrets, drain timing, references between objects).
//
//   node validate.mjs --modules DIR --known-env FILE [--secret-template FILE]
//                     [--providers-out DIR] LABEL=RENDERED.yaml...
//
// --modules        a node_modules folder holding kubernetes-models and js-yaml
// --known-env      JSON {"broker": [...], "worker": [...], "migrate": [...]}: the variables each
//                  program reads, taken from its configuration table
// --secret-template  the Secrets template (ferrule-secrets for the workers, ferrule-migrate-secrets
//                  for the migration Job), checked to hold placeholders only
// --providers-out  writes the providers.json of each ferrule-providers ConfigMap to
//                  DIR/LABEL.providers.json, for the catalog loader to check
//
// Prints one line per problem and exits 1 when there is any.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const args = process.argv.slice(2);
const opts = { inputs: [] };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (["--modules", "--known-env", "--secret-template", "--providers-out"].includes(a)) {
    if (i + 1 >= args.length) usage(`option "${a}" needs a value`);
    opts[a.slice(2)] = args[++i];
  } else if (/^[A-Za-z0-9_.-]+=/.test(a)) {
    const eq = a.indexOf("=");
    opts.inputs.push({ label: a.slice(0, eq), file: a.slice(eq + 1) });
  } else {
    usage(`unexpected argument "${a}"`);
  }
}
if (!opts.modules || !opts["known-env"] || opts.inputs.length === 0)
  usage("--modules, --known-env and at least one LABEL=FILE are required");

function usage(msg) {
  console.error(`validate: ${msg}`);
  console.error("usage: node validate.mjs --modules DIR --known-env FILE [--secret-template FILE] [--providers-out DIR] LABEL=FILE...");
  process.exit(2);
}

const require = createRequire(path.join(path.resolve(opts.modules), "noop.js"));
const yaml = require("js-yaml");
const core = require("kubernetes-models/v1");
const apps = require("kubernetes-models/apps/v1");
const batch = require("kubernetes-models/batch/v1");
const policy = require("kubernetes-models/policy/v1");
const networking = require("kubernetes-models/networking.k8s.io/v1");
const autoscaling = require("kubernetes-models/autoscaling/v2");

// apiVersion -> kind -> kubernetes-models class. A kind missing here fails the test: add it.
const MODELS = {
  "v1": {
    Service: core.Service, ConfigMap: core.ConfigMap, Secret: core.Secret,
    Namespace: core.Namespace, ServiceAccount: core.ServiceAccount,
  },
  "apps/v1": { Deployment: apps.Deployment, StatefulSet: apps.StatefulSet },
  "batch/v1": { Job: batch.Job, CronJob: batch.CronJob },
  "policy/v1": { PodDisruptionBudget: policy.PodDisruptionBudget },
  "networking.k8s.io/v1": { NetworkPolicy: networking.NetworkPolicy, Ingress: networking.Ingress },
  "autoscaling/v2": { HorizontalPodAutoscaler: autoscaling.HorizontalPodAutoscaler },
};

const UID = 10001;
// Worker defaults from worker/main.c, used when a manifest does not set the variable.
const WORKER_DEFAULTS = {
  FERRULE_DRAIN_MS: 25000, FERRULE_LEASE_MS: 45000,
  FERRULE_PROVIDER_TIMEOUT_MS: 15000, FERRULE_PROVIDER_CONNECT_TIMEOUT_MS: 5000,
  FERRULE_HEARTBEAT_MS: 1000, FERRULE_DB_STATEMENT_TIMEOUT_MS: 0,
  FERRULE_PARTITIONS: 256, FERRULE_WEBHOOK_TIMEOUT_MS: 10000, FERRULE_WEBHOOK_LEASE_MS: 30000,
};
// worker/main.c's default for FERRULE_WEBHOOK_MAX_AGE_S, when the workers do not set it.
const WORKER_WEBHOOK_MAX_AGE_S = (() => {
  const m = fs.readFileSync("worker/main.c", "utf8").match(/"FERRULE_WEBHOOK_MAX_AGE_S", CONFIG_INT, &\w+, "(\d+)"/);
  if (!m) { console.log("validate: worker/main.c has no default for FERRULE_WEBHOOK_MAX_AGE_S"); process.exit(1); }
  return Number(m[1]);
})();
const BROKER_DEFAULTS = {
  FERRULE_PARTITIONS: 256, FERRULE_DEFAULT_DEADLINE_MS: 5000, FERRULE_MAX_PENDING: 100000,
  FERRULE_MAX_PENDING_BYTES: 268435456, FERRULE_UNREAD_ANSWER_BYTES: 33554432,
  FERRULE_CONNECTION_BUDGET: 1048576, FERRULE_UNFINISHED_BYTES: 16777216,
};
// What a broker may hold at the bounds docs/operations.md gives ("Sizing a broker's memory"):
// request bodies pending (FERRULE_MAX_PENDING_BYTES), the pending entries themselves (some 820
// bytes each, sizeof (pending_t), with their hash and heap slots: 1 KiB), unread answers (twice
// FERRULE_UNREAD_ANSWER_BYTES), the audit queue (AUDIT_QUEUE records of some 300 bytes), the
// process itself, and the unfinished messages of all client connections up to their cut (8 x
// FERRULE_UNFINISHED_BYTES on the wire while the broker has unread messages, twice that in memory
// under CURVE).
const BROKER_PENDING_ENTRY = 1024;
const BROKER_PROCESS = 64 * 1048576;
const AUDIT_QUEUE = (() => {
  const m = fs.readFileSync("broker/audit.h", "utf8").match(/^#define AUDIT_QUEUE\s+(\d+)/m);
  if (!m) { console.log("validate: broker/audit.h defines no AUDIT_QUEUE"); process.exit(1); }
  return Number(m[1]);
})();
const AUDIT_RECORD = 320;
// Gateway defaults from gateway/main.c (the providers read from its configuration table).
const GATEWAY_DEFAULTS = {
  FERRULE_GATEWAY_DRAIN_MS: 25000,
  FERRULE_GATEWAY_PROVIDERS: (() => {
    const m = fs.readFileSync("gateway/main.c", "utf8").match(/"FERRULE_GATEWAY_PROVIDERS", CONFIG_STRING, &\w+, "([^"]*)"/);
    if (!m) { console.log("validate: gateway/main.c has no default for FERRULE_GATEWAY_PROVIDERS"); process.exit(1); }
    return m[1];
  })(),
};
// The worker's drain outlasts FERRULE_DRAIN_MS while a provider call or a commit is out: up to the
// later of the provider timeout from its start and FERRULE_DRAIN_MS, plus the statement timeout
// and 500 ms (worker/worker.c, worker_run). The grace period must exceed that by this much, for
// the exit after the drain.
const WORKER_EXIT_MARGIN_MS = 5000;
// The longest deadline the gateway gives a broker call (gateway/gateway.h: GW_CALL_MS,
// GW_CALLBACK_MS...): a draining broker answers its pending requests within their deadlines, and
// a draining gateway waits for its requests in flight, so both grace periods must outlast it.
const GATEWAY_LONGEST_CALL_MS = (() => {
  const h = fs.readFileSync("gateway/gateway.h", "utf8");
  const ms = [...h.matchAll(/^#define GW_[A-Z_]+_MS\s+(\d+)/gm)].map((m) => Number(m[1]));
  if (ms.length === 0) { console.log("validate: gateway/gateway.h defines no GW_*_MS deadline"); process.exit(1); }
  return Math.max(...ms);
})();
// Variables that hold secrets: they must come from a Secret, never from a literal value.
const SECRET_VARS = /^(FERRULE_DATABASE_URL|FERRULE_ENCRYPTION_KEY|FERRULE_ENCRYPTION_OLD_KEYS|FERRULE_FINGERPRINT_KEY|FERRULE_GATEWAY_SESSION_KEY|FERRULE_[A-Z0-9_]+_CLIENT_SECRET)(_FILE)?$/;
// Which Secret each program reads: the migration Job runs as the schema owner, everything else
// (the workers and their "ferrule-migrate wait") as the runtime role. The owner's credentials
// must never reach a worker pod.
const WORKER_SECRET = "ferrule-secrets";
const OWNER_SECRET = "ferrule-migrate-secrets";
const PROVIDER_CREDENTIAL = /^FERRULE_[A-Z0-9_]+_CLIENT_(ID|SECRET)$/;
const PLACEHOLDER = /^(|REPLACE_ME[A-Za-z0-9_.:/-]*)$/;

const knownEnv = JSON.parse(fs.readFileSync(opts["known-env"], "utf8"));
let problems = 0;

function problem(label, obj, msg) {
  const what = obj ? `${obj.kind || "?"}/${(obj.metadata && obj.metadata.name) || "?"}` : "";
  console.log(`validate: ${label}: ${what}${what ? ": " : ""}${msg}`);
  problems++;
}

// ---- schema validation, with unknown fields ------------------------------------------------

// Wraps value in proxies that record which keys the validator reads. The generated validators
// read every property their schema declares, so a key nobody read is one the schema does not
// know: a typo, or a field of another API version, which the API server would reject.
function track(value, where, registry) {
  if (value === null || typeof value !== "object") return value;
  const seen = new Set();
  const children = new Map();
  if (!Array.isArray(value)) registry.push({ where, target: value, seen });
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return v;
      seen.add(key);
      if (v === null || typeof v !== "object") return v;
      if (!children.has(key)) children.set(key, track(v, `${where}/${key}`, registry));
      return children.get(key);
    },
  });
}

function validateSchema(label, obj) {
  const byVersion = MODELS[obj.apiVersion];
  const Model = byVersion && byVersion[obj.kind];
  if (!Model) {
    problem(label, obj, `no schema for apiVersion "${obj.apiVersion}" kind "${obj.kind}": add it to MODELS in tests/deploy/validate.mjs`);
    return;
  }
  const model = new Model(obj);
  const registry = [];
  try {
    model.validate.call(track(model, "", registry));
  } catch (e) {
    problem(label, obj, `does not match the ${obj.apiVersion} ${obj.kind} schema: ${e.message}`);
    return;
  }
  for (const { where, target, seen } of registry)
    for (const key of Object.keys(target))
      if (!seen.has(key)) problem(label, obj, `unknown field "${where}/${key}" (not in the ${obj.apiVersion} ${obj.kind} schema)`);
}

// ---- helpers --------------------------------------------------------------------------------

// The pod template of a workload (a CronJob's is in its job template); null for other kinds.
function templateOf(obj) {
  if (["Deployment", "StatefulSet", "Job"].includes(obj.kind))
    return (obj.spec && obj.spec.template) || null;
  if (obj.kind === "CronJob")
    return (obj.spec && obj.spec.jobTemplate && obj.spec.jobTemplate.spec && obj.spec.jobTemplate.spec.template) || null;
  return null;
}

function podSpecOf(obj) {
  const t = templateOf(obj);
  return (t && t.spec) || null;
}

function programOf(container) {
  const cmd = (container.command || [])[0] || "";
  if (cmd.endsWith("ferrule-broker")) return "broker";
  if (cmd.endsWith("ferrule-worker")) return "worker";
  if (cmd.endsWith("ferrule-gateway")) return "gateway";
  if (cmd.endsWith("ferrule-migrate")) return "migrate";
  if (cmd.endsWith("ferrulectl")) return "ctl";
  return null;
}

function labelsMatch(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}

// The container's environment as the kubelet builds it: envFrom ConfigMaps first, then env.
// Values from Secrets are marked, not read.
function environment(container, configMaps) {
  const env = {};
  for (const from of container.envFrom || []) {
    if (from.configMapRef) {
      const cm = configMaps.get(from.configMapRef.name);
      for (const [k, v] of Object.entries((cm && cm.data) || {})) env[k] = { value: v, source: "configmap" };
    }
  }
  for (const e of container.env || []) {
    if (e.valueFrom && e.valueFrom.secretKeyRef) env[e.name] = { source: "secret" };
    else if (e.valueFrom) env[e.name] = { source: "field" };
    else env[e.name] = { value: e.value, source: "literal" };
  }
  return env;
}

// A Kubernetes memory quantity in bytes ("512Mi", "1Gi", "1G", "134217728"); NaN when unreadable.
function memoryBytes(q) {
  const m = String(q).match(/^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/);
  if (!m) return NaN;
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2]] || 1;
  return Number(m[1]) * unit;
}

function number(env, name, defaults) {
  const e = env[name];
  if (e && e.value !== undefined) return Number(e.value);
  return defaults[name];
}

// ---- Ferrule's rules ------------------------------------------------------------------------

function checkContainer(label, obj, pod, c, isInit, configMaps, secretKeys, pvcVolumes) {
  const where = `${isInit ? "init container" : "container"} "${c.name}"`;
  const podSc = pod.securityContext || {};
  const sc = c.securityContext || {};
  const eff = (k) => (sc[k] !== undefined ? sc[k] : podSc[k]);

  for (const kind of ["requests", "limits"])
    for (const res of ["cpu", "memory"])
      if (!c.resources || !c.resources[kind] || c.resources[kind][res] === undefined)
        problem(label, obj, `${where} has no resources.${kind}.${res}`);
  const batchJob = obj.kind === "Job" || obj.kind === "CronJob";
  if (!batchJob && !isInit) {
    if (!c.livenessProbe) problem(label, obj, `${where} has no livenessProbe`);
    if (!c.readinessProbe) problem(label, obj, `${where} has no readinessProbe`);
    for (const [probe, p] of [["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]]) {
      const hg = c[probe] && c[probe].httpGet;
      if (hg && hg.path !== p) problem(label, obj, `${where}: ${probe} asks "${hg.path}", the programs serve "${p}"`);
    }
  }
  if (eff("runAsNonRoot") !== true) problem(label, obj, `${where} does not set runAsNonRoot: true`);
  if (eff("runAsUser") !== UID) problem(label, obj, `${where} runs as uid ${eff("runAsUser")}, not ${UID} (the image's user)`);
  if (sc.readOnlyRootFilesystem !== true) problem(label, obj, `${where} does not set readOnlyRootFilesystem: true`);
  if (sc.allowPrivilegeEscalation !== false) problem(label, obj, `${where} does not set allowPrivilegeEscalation: false`);
  if (sc.privileged === true) problem(label, obj, `${where} is privileged`);
  const drop = (sc.capabilities && sc.capabilities.drop) || [];
  if (!drop.includes("ALL")) problem(label, obj, `${where} does not drop ALL capabilities`);
  if (sc.capabilities && (sc.capabilities.add || []).length) problem(label, obj, `${where} adds capabilities`);
  const seccomp = eff("seccompProfile");
  if (!seccomp || seccomp.type !== "RuntimeDefault") problem(label, obj, `${where} has no seccompProfile RuntimeDefault`);
  if (!c.image || /:latest$/.test(c.image) || !/:[^/]+$/.test(c.image))
    problem(label, obj, `${where} image "${c.image}" has no pinned tag`);

  const program = programOf(c);
  if (!program) {
    problem(label, obj, `${where} runs "${(c.command || []).join(" ")}", not one of Ferrule's programs`);
    return;
  }
  const env = environment(c, configMaps);
  const known = new Set(knownEnv[program] || []);
  for (const [name, e] of Object.entries(env)) {
    if (!name.startsWith("FERRULE_")) continue;
    const base = SECRET_VARS.test(name) ? name.replace(/_FILE$/, "") : name;   // every secret has a _FILE form
    if (!known.has(base) && !(program === "worker" && PROVIDER_CREDENTIAL.test(base)))
      problem(label, obj, `${where}: ${program} reads no variable ${name} (not in its configuration table)`);
    // a secret's _FILE form is a path (to a mounted Secret) and may be a literal
    if (SECRET_VARS.test(name) && !name.endsWith("_FILE") && e.source !== "secret")
      problem(label, obj, `${where}: ${name} is a secret and must come from a Secret, not a ${e.source}`);
  }
  const allowed = batchJob && program === "migrate" ? OWNER_SECRET : WORKER_SECRET;
  for (const e of c.env || []) {
    const ref = e.valueFrom && e.valueFrom.secretKeyRef;
    if (ref && secretKeys && (!secretKeys.has(ref.name) || !secretKeys.get(ref.name).has(ref.key)))
      problem(label, obj, `${where}: ${e.name} reads key "${ref.key}" of Secret "${ref.name}", which the template does not define`);
    if (ref && ref.name !== allowed)
      problem(label, obj, `${where}: ${e.name} comes from Secret "${ref.name}"; this container must read "${allowed}" (the ${allowed === OWNER_SECRET ? "schema owner" : "runtime role"})`);
  }
  for (const from of c.envFrom || []) {
    if (from.configMapRef && !configMaps.has(from.configMapRef.name))
      problem(label, obj, `${where} reads ConfigMap "${from.configMapRef.name}", which is not rendered`);
    if (from.secretRef && from.secretRef.name !== allowed)
      problem(label, obj, `${where} reads Secret "${from.secretRef.name}"; this container must read "${allowed}"`);
  }

  const grace = pod.terminationGracePeriodSeconds !== undefined ? pod.terminationGracePeriodSeconds : 30;
  if (program === "broker" && !isInit) {
    const given = c.resources && c.resources.limits && c.resources.limits.memory;
    const limit = given === undefined ? undefined : memoryBytes(given);
    const n = (name) => number(env, name, BROKER_DEFAULTS);
    const parts = [
      ["FERRULE_MAX_PENDING_BYTES", n("FERRULE_MAX_PENDING_BYTES")],
      [`FERRULE_MAX_PENDING ${n("FERRULE_MAX_PENDING")} entries`, n("FERRULE_MAX_PENDING") * BROKER_PENDING_ENTRY],
      ["2 x FERRULE_UNREAD_ANSWER_BYTES", 2 * n("FERRULE_UNREAD_ANSWER_BYTES")],
      ["16 x FERRULE_UNFINISHED_BYTES", 16 * n("FERRULE_UNFINISHED_BYTES")],
      ["the audit queue", AUDIT_QUEUE * AUDIT_RECORD],
      ["the process", BROKER_PROCESS],
    ];
    const need = parts.reduce((a, [, v]) => a + v, 0);
    const mib = (v) => Math.ceil(v / 1048576);
    if (limit !== undefined && !(limit >= need))
      problem(label, obj, `${where}: resources.limits.memory ${given} is below what the broker may hold at its bounds, ${mib(need)} MiB (${parts.map(([k, v]) => `${k} ${mib(v)}`).join(" + ")}; docs/operations.md, "Sizing a broker's memory"): raise the limit or lower the bounds`);
    const longest = Math.max(GATEWAY_LONGEST_CALL_MS, number(env, "FERRULE_DEFAULT_DEADLINE_MS", BROKER_DEFAULTS));
    if (!(grace * 1000 > longest))
      problem(label, obj, `terminationGracePeriodSeconds ${grace} does not exceed the longest deadline a broker answers within (${longest} ms, the gateway's callback): the kubelet would kill it before it answers`);
  }
  if (program === "gateway" && !isInit) {
    // overlays patch the gateway's env by index (overlays/example): a value that lands on the
    // wrong variable shows here
    const bind = env.FERRULE_GATEWAY_BIND && env.FERRULE_GATEWAY_BIND.value;
    if (bind !== undefined && !/^[^:/\s]+:[0-9]+$/.test(bind))
      problem(label, obj, `${where}: FERRULE_GATEWAY_BIND "${bind}" is not HOST:PORT`);
    const pub = env.FERRULE_GATEWAY_PUBLIC_URL && env.FERRULE_GATEWAY_PUBLIC_URL.value;
    if (pub !== undefined && !/^https:\/\/[^/\s]+\/?$/.test(pub))
      problem(label, obj, `${where}: FERRULE_GATEWAY_PUBLIC_URL "${pub}" is not an https:// origin`);
    const drain = number(env, "FERRULE_GATEWAY_DRAIN_MS", GATEWAY_DEFAULTS);
    if (!(drain > GATEWAY_LONGEST_CALL_MS))
      problem(label, obj, `FERRULE_GATEWAY_DRAIN_MS ${drain} does not exceed the gateway's longest broker call (${GATEWAY_LONGEST_CALL_MS} ms): a draining gateway would drop callbacks in flight`);
    if (!(grace * 1000 > drain))
      problem(label, obj, `terminationGracePeriodSeconds ${grace} does not exceed FERRULE_GATEWAY_DRAIN_MS ${drain} ms: the kubelet would kill requests in flight`);
  }
  if (program === "worker" && !isInit) {
    const drain = number(env, "FERRULE_DRAIN_MS", WORKER_DEFAULTS);
    // as worker/main.c: the statement timeout is the heartbeat's when unset
    const statement = number(env, "FERRULE_DB_STATEMENT_TIMEOUT_MS", WORKER_DEFAULTS) || number(env, "FERRULE_HEARTBEAT_MS", WORKER_DEFAULTS);
    const provider = number(env, "FERRULE_PROVIDER_TIMEOUT_MS", WORKER_DEFAULTS);
    const longest = Math.max(drain, provider) + statement + 500;
    if (!(grace * 1000 > longest + WORKER_EXIT_MARGIN_MS))
      problem(label, obj, `terminationGracePeriodSeconds ${grace} does not exceed the worker's longest drain plus ${WORKER_EXIT_MARGIN_MS} ms (${longest + WORKER_EXIT_MARGIN_MS} ms: the longer of FERRULE_DRAIN_MS ${drain} and FERRULE_PROVIDER_TIMEOUT_MS ${provider}, for a commit or a provider call still out when it ends, + the statement timeout ${statement} + 500): the kubelet would kill refreshes in flight`);
    const lease = number(env, "FERRULE_LEASE_MS", WORKER_DEFAULTS);
    // as worker/main.c: the call's timeout (its connect included), the claim's answer, the wait
    // of the call's answer for a free database connection and its commit (each the statement
    // timeout and 250 ms)
    const calls = number(env, "FERRULE_PROVIDER_TIMEOUT_MS", WORKER_DEFAULTS) + 3 * (statement + 250);
    if (!(lease > calls))
      problem(label, obj, `FERRULE_LEASE_MS ${lease} does not exceed the provider call timeout plus a claim's answer, the wait of the call's answer for a free database connection and its commit (${calls} ms): the worker refuses to start`);
    const id = (c.env || []).find((e) => e.name === "FERRULE_WORKER_ID");
    if (!id || !id.valueFrom || !id.valueFrom.fieldRef || id.valueFrom.fieldRef.fieldPath !== "metadata.name")
      problem(label, obj, `${where}: FERRULE_WORKER_ID must come from metadata.name (a stable pod name)`);
    const journal = env.FERRULE_JOURNAL_PATH && env.FERRULE_JOURNAL_PATH.value;
    const mount = journal && (c.volumeMounts || []).find((m) => journal.startsWith(m.mountPath.replace(/\/?$/, "/")));
    if (!journal) problem(label, obj, `${where}: FERRULE_JOURNAL_PATH is not set`);
    else if (!mount || !pvcVolumes.has(mount.name))
      problem(label, obj, `${where}: the journal "${journal}" is not on a persistent volume (a volumeClaimTemplate)`);
    else if (mount.readOnly) problem(label, obj, `${where}: the journal volume is mounted read-only`);
    // webhooks.json may hold credentials in its URLs and names the signing secrets' files: from
    // a Secret, never a ConfigMap (which anyone who may read the namespace's configuration reads)
    const webhooks = env.FERRULE_WEBHOOKS_FILE && env.FERRULE_WEBHOOKS_FILE.value;
    if (webhooks) {
      const m = (c.volumeMounts || []).find((x) => webhooks.startsWith(x.mountPath.replace(/\/?$/, "/")));
      const vol = m && (pod.volumes || []).find((v) => v.name === m.name);
      if (!vol)
        problem(label, obj, `${where}: FERRULE_WEBHOOKS_FILE "${webhooks}" is on no mounted volume: the worker would not start`);
      else if (!vol.secret)
        problem(label, obj, `${where}: FERRULE_WEBHOOKS_FILE "${webhooks}" is on volume "${vol.name}", not mounted from a Secret: webhook URLs may carry credentials, and the file names the signing secrets`);
      else if (secretKeys && !secretKeys.has(vol.secret.secretName) && !(vol.secret.secretName in FILE_SECRETS))
        problem(label, obj, `${where}: FERRULE_WEBHOOKS_FILE comes from Secret "${vol.secret.secretName}", which the template does not define`);
      const timeout = number(env, "FERRULE_WEBHOOK_TIMEOUT_MS", WORKER_DEFAULTS);
      const whLease = number(env, "FERRULE_WEBHOOK_LEASE_MS", WORKER_DEFAULTS);
      if (!(whLease >= timeout + 500))
        problem(label, obj, `FERRULE_WEBHOOK_LEASE_MS ${whLease} does not exceed FERRULE_WEBHOOK_TIMEOUT_MS ${timeout} by 500 ms: the worker refuses to start`);
    }
    const providers = env.FERRULE_PROVIDERS_FILE && env.FERRULE_PROVIDERS_FILE.value;
    if (providers && !(c.volumeMounts || []).some((m) => providers.startsWith(m.mountPath.replace(/\/?$/, "/"))))
      problem(label, obj, `${where}: FERRULE_PROVIDERS_FILE "${providers}" is on no mounted volume`);
  }
  return { program, env };
}

function checkObjects(label, docs) {
  const byKind = (k) => docs.filter((d) => d.kind === k);
  const configMaps = new Map(byKind("ConfigMap").map((d) => [d.metadata.name, d]));
  const names = new Set();
  const namespaces = new Set();
  const partitions = [];

  for (const obj of docs) {
    const key = `${obj.kind}/${obj.metadata && obj.metadata.name}`;
    if (names.has(key)) problem(label, obj, "appears twice");
    names.add(key);
    if (obj.kind !== "Namespace") namespaces.add((obj.metadata && obj.metadata.namespace) || "");
    const labels = (obj.metadata && obj.metadata.labels) || {};
    if (labels["app.kubernetes.io/name"] !== "ferrule" && obj.kind !== "Namespace")
      problem(label, obj, 'has no label app.kubernetes.io/name: ferrule');
    if (obj.kind === "Secret") checkSecret(label, obj);
  }
  if (namespaces.size > 1) problem(label, null, `objects are spread over namespaces ${[...namespaces].join(", ")}`);

  for (const obj of docs) {
    const pod = podSpecOf(obj);
    if (!pod) continue;
    const tlabels = (templateOf(obj).metadata && templateOf(obj).metadata.labels) || {};
    if (obj.spec.selector && !labelsMatch(obj.spec.selector.matchLabels, tlabels))
      problem(label, obj, "its selector does not match its pod template's labels");
    if (pod.automountServiceAccountToken !== false)
      problem(label, obj, "mounts a service account token it does not need");
    const pvcVolumes = new Set(((obj.spec.volumeClaimTemplates) || []).map((v) => v.metadata.name));
    for (const v of pod.volumes || [])
      if (v.configMap && !configMaps.has(v.configMap.name))
        problem(label, obj, `volume "${v.name}" uses ConfigMap "${v.configMap.name}", which is not rendered`);
    for (const [list, isInit] of [[pod.initContainers || [], true], [pod.containers || [], false]])
      for (const c of list) {
        const r = checkContainer(label, obj, pod, c, isInit, configMaps, secretKeys, pvcVolumes);
        if (r && !isInit && (r.program === "broker" || r.program === "worker"))
          partitions.push({ obj, program: r.program, value: number(r.env, "FERRULE_PARTITIONS", r.program === "broker" ? BROKER_DEFAULTS : WORKER_DEFAULTS) });
      }
    if (obj.kind === "StatefulSet" && byKind("HorizontalPodAutoscaler").some((h) => h.spec.scaleTargetRef.name === obj.metadata.name) && obj.spec.replicas !== undefined)
      problem(label, obj, "sets spec.replicas although an autoscaler owns it: every apply would reset the count");
  }
  // The dashboard's Connect offers FERRULE_GATEWAY_PROVIDERS; each needs a client id the workers
  // have (providers.json's client_id, or the variable it names, FERRULE_<PROVIDER>_CLIENT_ID by
  // default, from their environment or the Secret template), or its Connect fails "configuration".
  const providersCm = byKind("ConfigMap").find((d) => /^ferrule-providers(-|$)/.test(d.metadata.name));
  let catalog = {};
  try { catalog = JSON.parse((providersCm && providersCm.data && providersCm.data["providers.json"]) || "{}"); } catch (e) { /* reported by the catalog loader's check */ }
  const workerContainers = docs.filter((d) => podSpecOf(d)).flatMap((d) => podSpecOf(d).containers.filter((c) => programOf(c) === "worker"));
  const workerHas = (name) => workerContainers.length > 0 && workerContainers.every((c) => {
    const set = (c.env || []).find((e) => e.name === name);
    if (set) {
      const ref = set.valueFrom && set.valueFrom.secretKeyRef;
      return ref ? secretKeys.has(ref.name) && secretKeys.get(ref.name).has(ref.key) : Boolean(set.value);
    }
    const env = environment(c, configMaps);
    if (env[name] && env[name].value) return true;          // from a ConfigMap
    return (c.envFrom || []).some((f) => f.secretRef && secretKeys.has(f.secretRef.name) && secretKeys.get(f.secretRef.name).has(name));
  });
  if (secretKeys)
    for (const obj of docs.filter((d) => podSpecOf(d)))
      for (const c of podSpecOf(obj).containers.filter((x) => programOf(x) === "gateway")) {
        const env = environment(c, configMaps);
        const raw = env.FERRULE_GATEWAY_PROVIDERS && env.FERRULE_GATEWAY_PROVIDERS.value !== undefined ? env.FERRULE_GATEWAY_PROVIDERS.value : GATEWAY_DEFAULTS.FERRULE_GATEWAY_PROVIDERS;
        for (const p of raw.split(",").map((x) => x.trim()).filter(Boolean)) {
          const entry = catalog[p] || {};
          if (entry.client_id) continue;
          const name = entry.client_id_env || `FERRULE_${p.toUpperCase().replace(/-/g, "_")}_CLIENT_ID`;
          if (!workerHas(name))
            problem(label, obj, `container "${c.name}": FERRULE_GATEWAY_PROVIDERS${env.FERRULE_GATEWAY_PROVIDERS ? "" : " (unset: the gateway's default)"} offers "${p}", whose client id ${name} the workers are not given (not a key of their Secret template, nor in their environment or providers.json): its Connect would fail with "configuration"`);
        }
      }
  if (new Set(partitions.map((p) => p.value)).size > 1)
    problem(label, null, `FERRULE_PARTITIONS differs between programs: ${partitions.map((p) => `${p.obj.metadata.name}=${p.value}`).join(", ")}`);

  const workloads = docs.filter((d) => podSpecOf(d));
  const podsMatching = (sel) => workloads.filter((w) => labelsMatch(sel, (templateOf(w).metadata || {}).labels));
  for (const svc of byKind("Service")) {
    const matched = podsMatching(svc.spec.selector);
    if (!svc.spec.selector || matched.length === 0) { problem(label, svc, "selects no pods"); continue; }
    for (const p of svc.spec.ports || []) {
      if (typeof p.targetPort !== "string") continue;
      const ok = matched.some((w) => podSpecOf(w).containers.some((c) => (c.ports || []).some((cp) => cp.name === p.targetPort)));
      if (!ok) problem(label, svc, `targetPort "${p.targetPort}" names no container port of the pods it selects`);
    }
  }
  for (const pdb of byKind("PodDisruptionBudget")) {
    const matched = podsMatching(pdb.spec.selector && pdb.spec.selector.matchLabels);
    if (matched.length === 0) problem(label, pdb, "selects no pods");
    // docs/operations.md, "Disruption budgets". A worker is not ready while its database is down,
    // and still serves its cached tokens: evicting unready workers would let one drain take
    // every worker, and their caches, during an outage. Brokers and gateways hold nothing, and
    // an unready one gets no traffic: a broken one must never block a drain.
    const workers = matched.some((w) => podSpecOf(w).containers.some((c) => programOf(c) === "worker"));
    const policy = pdb.spec.unhealthyPodEvictionPolicy;
    if (workers && policy !== "IfHealthyBudget")
      problem(label, pdb, `sets unhealthyPodEvictionPolicy: ${policy || "(unset)"}; the workers' must be IfHealthyBudget (set explicitly): a worker is unready while its database is down but serves its cached tokens, and AlwaysAllow lets one drain evict them all`);
    if (!workers && policy !== "AlwaysAllow")
      problem(label, pdb, "does not set unhealthyPodEvictionPolicy: AlwaysAllow (a broken pod would block node drains)");
  }
  for (const np of byKind("NetworkPolicy"))
    if (podsMatching(np.spec.podSelector && np.spec.podSelector.matchLabels).length === 0) problem(label, np, "selects no pods");
  for (const hpa of byKind("HorizontalPodAutoscaler")) {
    const t = hpa.spec.scaleTargetRef;
    const target = docs.find((d) => d.kind === t.kind && d.metadata.name === t.name);
    if (!target) { problem(label, hpa, `scales ${t.kind}/${t.name}, which is not rendered`); continue; }
    const usesCpu = (hpa.spec.metrics || []).some((m) => m.type === "Resource" && m.resource.name === "cpu");
    if (usesCpu && target.spec.template.spec.containers.some((c) => !(c.resources && c.resources.requests && c.resources.requests.cpu)))
      problem(label, hpa, "scales on CPU, but a container of its target requests no CPU");
  }

  // The specific promises of the deployment docs.
  const backend = docs.find((d) => d.kind === "Service" && d.metadata.name === "ferrule-broker-backend");
  if (!backend) problem(label, null, 'no Service "ferrule-broker-backend"');
  else if (backend.spec.clusterIP !== "None" || backend.spec.publishNotReadyAddresses !== true)
    problem(label, backend, "must be headless (clusterIP: None) and publish not-ready brokers");
  const frontend = docs.find((d) => d.kind === "Service" && d.metadata.name === "ferrule-broker");
  if (!frontend || !(frontend.spec.ports || []).some((p) => p.port === 5555)) problem(label, null, 'no Service "ferrule-broker" on port 5555');
  const brokerPolicy = byKind("NetworkPolicy").find((np) => np.spec.podSelector.matchLabels["app.kubernetes.io/component"] === "broker");
  const rule5555 = brokerPolicy && (brokerPolicy.spec.ingress || []).filter((r) => (r.ports || []).some((p) => p.port === 5555));
  if (!rule5555 || rule5555.length !== 1 || !rule5555[0].from || !rule5555[0].from.every((f) => f.podSelector && f.podSelector.matchLabels && f.podSelector.matchLabels["ferrule-client"] === "true"))
    problem(label, brokerPolicy || null, 'port 5555 must be open only to pods labelled ferrule-client: "true"');
  const worker = docs.find((d) => d.kind === "StatefulSet" && d.metadata.name === "ferrule-worker");
  if (!worker) problem(label, null, 'no StatefulSet "ferrule-worker"');
  else if ((worker.spec.volumeClaimTemplates || []).length === 0) problem(label, worker, "has no volumeClaimTemplates for the journal");
  if (!byKind("Job").some((j) => j.spec.template.spec.containers.some((c) => /^ferrule-migrate up( |$)/.test((c.command || []).join(" ")))))
    problem(label, null, 'no Job runs "ferrule-migrate up"');
  if (!byKind("Job").some((j) => j.spec.template.spec.containers.some((c) => /--runtime-role /.test((c.command || []).join(" ")))))
    problem(label, null, 'no Job grants the workers\' runtime role ("ferrule-migrate up --runtime-role ROLE")');
  checkPrune(label, docs, byKind);
}

// Events and deliveries are kept until "ferrule-migrate prune-events" deletes them (docs/
// operations.md, "Retention"): a deployment with workers schedules it, never twice at once, with
// --older-than well above the longest a delivery is retried (FERRULE_WEBHOOK_MAX_AGE_S): a
// delivery still pending is deleted with its event, so a margin of twice the max age.
function checkPrune(label, docs, byKind) {
  const workers = docs.filter((d) => podSpecOf(d) && podSpecOf(d).containers.some((c) => programOf(c) === "worker"));
  if (workers.length === 0) return;
  const runs = (c) => (c.command || []).concat(c.args || []).join(" ");
  const prunes = byKind("CronJob").filter((cj) => podSpecOf(cj).containers.some((c) => /^ferrule-migrate prune-events( |$)/.test(runs(c))));
  if (prunes.length === 0) {
    problem(label, null, 'no CronJob runs "ferrule-migrate prune-events": events and webhook deliveries would be kept for ever');
    return;
  }
  const configMaps = new Map(byKind("ConfigMap").map((d) => [d.metadata.name, d]));
  let maxAge = 0;
  for (const w of workers)
    for (const c of podSpecOf(w).containers.filter((x) => programOf(x) === "worker")) {
      const e = environment(c, configMaps).FERRULE_WEBHOOK_MAX_AGE_S;
      maxAge = Math.max(maxAge, e && e.value !== undefined ? Number(e.value) : WORKER_WEBHOOK_MAX_AGE_S);
    }
  for (const cj of prunes) {
    if (cj.spec.concurrencyPolicy !== "Forbid")
      problem(label, cj, `sets concurrencyPolicy: ${cj.spec.concurrencyPolicy || "(unset: Allow)"}; must be Forbid (a run still going is not doubled)`);
    for (const c of podSpecOf(cj).containers.filter((x) => /^ferrule-migrate prune-events( |$)/.test(runs(x)))) {
      const m = runs(c).match(/ --older-than[= ](\S+)/);
      const days = m ? Number(m[1]) : NaN;
      if (!Number.isInteger(days) || days < 1 || days > 36500)
        problem(label, cj, `container "${c.name}": "${runs(c)}" gives no --older-than=DAYS from 1 to 36500 (ferrule-migrate exits 2)`);
      else if (days * 86400 < 2 * maxAge)
        problem(label, cj, `container "${c.name}": --older-than=${days} days is below twice the workers' FERRULE_WEBHOOK_MAX_AGE_S ${maxAge} s: deliveries still being retried would be deleted with their events`);
    }
    const rules = ((cj.spec.jobTemplate.spec.podFailurePolicy || {}).rules || []).filter((r) => r.action === "FailJob" && r.onExitCodes);
    const failing = new Set(rules.flatMap((r) => (r.onExitCodes.operator === "In" ? r.onExitCodes.values : [])));
    for (const code of [1, 5])
      if (failing.has(code)) problem(label, cj, `fails the Job at once on exit ${code}, which a later try can mend (1: events a worker was sending were left; 5: database unreachable)`);
  }
}

function checkSecret(label, obj) {
  for (const field of ["stringData", "data"]) {
    for (const [k, v] of Object.entries(obj[field] || {})) {
      const text = field === "data" ? Buffer.from(String(v), "base64").toString("utf8") : String(v);
      if (!PLACEHOLDER.test(text)) problem(label, obj, `${field}.${k} is not a placeholder ("" or REPLACE_ME...): a real secret must never be in the repository`);
    }
  }
}

// ---- main -----------------------------------------------------------------------------------

// Secrets mounted as files (CURVE keys, allow-lists, webhooks): their keys are file names, not
// variables
const FILE_SECRETS = { "ferrule-broker-key": ["broker.key"], "ferrule-worker-keys": ["broker.pub"],
                       "ferrule-access": ["clients", "workers", "policy"],
                       "ferrule-gateway": ["gateway.key", "broker.pub", "session.key", "client-keys"],
                       "ferrule-webhooks": ["webhooks.json"] };
let secretKeys = null;       // Secret name -> Set of its keys
if (opts["secret-template"]) {
  const all = yaml.loadAll(fs.readFileSync(opts["secret-template"], "utf8")).filter(Boolean);
  const docs = all.filter((d) => !(d.metadata && d.metadata.name in FILE_SECRETS));
  for (const d of all.filter((x) => x.metadata && x.metadata.name in FILE_SECRETS)) {
    validateSchema("secret-template", d);
    checkSecret("secret-template", d);
    const keys = new Set([...Object.keys(d.stringData || {}), ...Object.keys(d.data || {})]);
    for (const k of FILE_SECRETS [d.metadata.name])
      if (!keys.has(k)) problem("secret-template", d, `has no key ${k}`);
  }
  if (docs.length !== 2 || all.some((d) => d.kind !== "Secret"))
    problem("secret-template", null, `${opts["secret-template"]} must hold the Secrets "${WORKER_SECRET}" and "${OWNER_SECRET}" (and the key Secrets), nothing else`);
  secretKeys = new Map();
  for (const d of docs) {
    validateSchema("secret-template", d);
    checkSecret("secret-template", d);
    const name = d.metadata && d.metadata.name;
    if (name !== WORKER_SECRET && name !== OWNER_SECRET)
      problem("secret-template", d, `must be named "${WORKER_SECRET}" or "${OWNER_SECRET}"`);
    const keys = new Set([...Object.keys(d.stringData || {}), ...Object.keys(d.data || {})]);
    secretKeys.set(name, keys);
    const required = name === OWNER_SECRET ? ["FERRULE_DATABASE_URL"]
                                           : ["FERRULE_DATABASE_URL", "FERRULE_ENCRYPTION_KEY", "FERRULE_ENCRYPTION_OLD_KEYS"];
    for (const k of required)
      if (!keys.has(k)) problem("secret-template", d, `has no key ${k}`);
    const reader = name === OWNER_SECRET ? "migrate" : "worker";
    for (const k of keys)
      if (!(knownEnv[reader] || []).includes(k) && !(reader === "worker" && PROVIDER_CREDENTIAL.test(k)))
        problem("secret-template", d, `key ${k} is no variable ${reader === "worker" ? "the worker" : "ferrule-migrate"} reads`);
  }
  for (const name of [WORKER_SECRET, OWNER_SECRET])
    if (!secretKeys.has(name)) problem("secret-template", null, `defines no Secret "${name}"`);
}

for (const { label, file } of opts.inputs) {
  let docs;
  try {
    docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter(Boolean);
  } catch (e) {
    problem(label, null, `${file} is not valid YAML: ${e.message}`);
    continue;
  }
  if (docs.length === 0) { problem(label, null, `${file} holds no objects`); continue; }
  const before = problems;
  for (const obj of docs) {
    if (!obj.metadata || !obj.metadata.name) { problem(label, obj, "has no metadata.name"); continue; }
    validateSchema(label, obj);
  }
  checkObjects(label, docs);
  if (opts["providers-out"]) {
    const cm = docs.find((d) => d.kind === "ConfigMap" && /^ferrule-providers(-|$)/.test(d.metadata.name));
    if (!cm || !cm.data || !cm.data["providers.json"]) problem(label, null, 'no ConfigMap "ferrule-providers" with providers.json');
    else fs.writeFileSync(path.join(opts["providers-out"], `${label}.providers.json`), cm.data["providers.json"]);
  }
  const kinds = docs.map((d) => d.kind).sort().join(", ");
  if (problems === before) console.log(`validate: ${label}: ${docs.length} objects valid (${kinds})`);
}

process.exit(problems ? 1 : 0);
