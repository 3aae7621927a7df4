// kustomize.mjs - renders a kustomization the way "kubectl kustomize" (kustomize v5) does, for the
// features deploy/k8s uses and no others, so that test_manifests.sh can check the manifests on a
// machine whose kubectl is too old (Debian 12 ships kustomize v2) or missing.
//
//   node kustomize.mjs --modules DIR KUSTOMIZATION_DIR
//       prints the rendered objects, as "kubectl kustomize KUSTOMIZATION_DIR" would
//   node kustomize.mjs --modules DIR --compare RENDERED.yaml KUSTOMIZATION_DIR
//       renders and compares with RENDERED.yaml (kubectl's output): the same objects by
//       apiVersion, kind, namespace and name, with the same content; prints every difference
//       and exits 1 when there is any
//
// --modules  a node_modules folder holding js-yaml
//
// What it implements (anything else in a kustomization.yaml is refused with an error, never
// silently ignored):
//   resources       files (several documents each) and directories holding a kustomization,
//                   rendered recursively; paths outside the kustomization's folder are refused
//                   unless they are a kustomization folder, as kustomize's load restrictor does
//   namespace       on every namespaced object
//   labels          pairs, includeSelectors, includeTemplates (kustomize's field specs)
//   images          name, newName, newTag, digest; on every containers[] and initContainers[]
//   replicas        name and count, on Deployments, ReplicaSets, ReplicationControllers and
//                   StatefulSets
//   configMapGenerator, secretGenerator
//                   name, namespace, behavior (create, merge, replace), literals, files (PATH or
//                   KEY=PATH), type (Secret); the name gets kustomize's content hash, and
//                   references to the generated names in pod specs follow it
//   patches         path or patch; a JSON 6902 patch (add, remove, replace, move, copy, test)
//                   with a target, or a strategic merge patch (with or without a target)
//
// The order of the steps is kustomize's: resources, generators, then strategic merge and JSON
// patches, namespace, labels, replicas and images; at the top level only, the hash suffixes and
// the references to the names that changed. Objects come out in kustomize's "legacy" order.
import { createRequire } from "node:module";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

class KustomizeError extends Error {}
const fail = (msg) => { throw new KustomizeError(msg); };

// ---- YAML as kustomize reads it ----
// kustomize parses with go-yaml v3: YAML 1.2 booleans and nulls, no timestamps, and an integer
// with a leading 0 is octal ("defaultMode: 0440" is 288). js-yaml's core schema reads 0440 as
// 440, so its integer type is wrapped.
let yaml;
let SCHEMA;
function loadYaml(modules) {
  const require = createRequire(path.join(path.resolve(modules), "noop.js"));
  yaml = require("js-yaml");
  const coreInt = yaml.CORE_SCHEMA.compiledImplicit.find((t) => t.tag === "tag:yaml.org,2002:int");
  const octal = /^[-+]?0[0-7]+$/;
  // a copy of js-yaml's own integer type (a Type, as extend() wants) with two functions replaced
  const intType = Object.assign(Object.create(Object.getPrototypeOf(coreInt)), coreInt, {
    resolve: (data) => coreInt.resolve(data) || (data !== null && octal.test(data)),
    construct: (data) => (octal.test(data) ? (data[0] === "-" ? -1 : 1) * parseInt(data.replace(/^[-+]/, ""), 8)
                                            : coreInt.construct(data)),
  });
  SCHEMA = yaml.CORE_SCHEMA.extend({ implicit: [intType] });
}
const parseAll = (text, where) => {
  try {
    return yaml.loadAll(text, null, { schema: SCHEMA, filename: where }).filter((d) => d !== null && d !== undefined);
  } catch (e) {
    fail(`could not parse "${where}": ${e.message}`);
  }
};
// kubectl prints with keys sorted, lists not indented under their key, and strings that would
// read as another type in double quotes.
const dump = (obj) => yaml.dump(obj, { schema: SCHEMA, sortKeys: true, noArrayIndent: true, quotingType: '"',
                                       lineWidth: -1, noRefs: true });

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const clone = (v) => (v === undefined ? v : structuredClone(v));

// ---- resource ids ----
function gvk(obj) {
  const av = obj.apiVersion || "";
  const slash = av.indexOf("/");
  return { group: slash < 0 ? "" : av.slice(0, slash), version: slash < 0 ? av : av.slice(slash + 1), kind: obj.kind || "" };
}
const nsOf = (obj) => (obj.metadata && obj.metadata.namespace) || "";
const sameNs = (a, b) => (a || "default") === (b || "default");
const idString = (obj) => `${obj.kind}/${obj.metadata.name}${nsOf(obj) ? ` in namespace "${nsOf(obj)}"` : ""}`;

// Kinds that have no namespace (kustomize leaves their metadata.namespace alone).
const CLUSTER_SCOPED = new Set([
  "APIService", "CertificateSigningRequest", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding",
  "ComponentStatus", "CSIDriver", "CSINode", "CustomResourceDefinition", "FlowSchema", "IngressClass",
  "MutatingWebhookConfiguration", "Namespace", "Node", "PersistentVolume", "PodSecurityPolicy",
  "PriorityClass", "PriorityLevelConfiguration", "RuntimeClass", "StorageClass", "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration", "VolumeAttachment",
]);

// ---- the kustomization file ----
const KUSTOMIZATION_FILES = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
const SUPPORTED = {
  top: ["apiVersion", "kind", "metadata", "resources", "namespace", "labels", "images", "replicas",
        "configMapGenerator", "secretGenerator", "patches"],
  labels: ["pairs", "includeSelectors", "includeTemplates"],
  images: ["name", "newName", "newTag", "digest"],
  replicas: ["name", "count"],
  generator: ["name", "namespace", "behavior", "literals", "files", "type"],
  patches: ["path", "patch", "target"],
  target: ["group", "version", "kind", "name", "namespace", "labelSelector"],
};
function checkFields(obj, allowed, where) {
  if (!isMap(obj)) fail(`${where} is not a mapping`);
  for (const k of Object.keys(obj))
    if (!allowed.includes(k))
      fail(`${where}: "${k}" is not implemented by tests/deploy/kustomize.mjs (it implements: ${allowed.join(", ")}); implement it there, or the deploy test cannot render without kubectl`);
}
function findKustomization(dir) {
  const found = KUSTOMIZATION_FILES.map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f));
  if (found.length > 1) fail(`"${dir}" holds more than one kustomization file: ${found.map((f) => path.basename(f)).join(", ")}`);
  return found[0];
}
const listOf = (v, where) => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(`${where} is not a list`);
  return v;
};

// A file a kustomization reads must be inside its folder (kustomize's LoadRestrictionsRootOnly).
function readLocal(dir, rel, where) {
  const file = path.resolve(dir, rel);
  const real = fs.existsSync(file) ? fs.realpathSync(file) : file;
  const root = fs.realpathSync(dir);
  if (real !== root && !real.startsWith(root + path.sep)) fail(`${where}: "${rel}" is outside "${dir}" (kustomize refuses to read it)`);
  if (!fs.existsSync(file)) fail(`${where}: "${rel}" does not exist`);
  return fs.readFileSync(file);
}

// ---- accumulate: one kustomization, without hash suffixes ----
// Returns [{obj, hash}], hash: a generated object whose name gets the content hash.
function accumulate(dir, stack = []) {
  dir = path.resolve(dir);
  if (stack.includes(dir)) fail(`kustomizations include each other: ${[...stack, dir].join(" -> ")}`);
  const kfile = findKustomization(dir);
  if (!kfile) fail(`"${dir}" holds no kustomization.yaml`);
  const docs = parseAll(fs.readFileSync(kfile, "utf8"), kfile);
  if (docs.length !== 1) fail(`${kfile}: expected one document`);
  const k = docs[0];
  checkFields(k, SUPPORTED.top, kfile);
  if (k.kind && k.kind !== "Kustomization") fail(`${kfile}: kind "${k.kind}" is not implemented (only Kustomization)`);

  let res = [];
  const add = (entry, where) => {
    const dup = res.find((r) => sameId(r.obj, entry.obj));
    if (dup) fail(`${where}: ${idString(entry.obj)} is already in the kustomization`);
    res.push(entry);
  };

  for (const r of listOf(k.resources, `${kfile}: resources`)) {
    if (typeof r !== "string") fail(`${kfile}: a resource is not a path`);
    if (/^[a-z]+:\/\/|^git@|^github\.com\//.test(r)) fail(`${kfile}: remote resource "${r}" is not implemented`);
    const p = path.resolve(dir, r);
    if (!fs.existsSync(p)) fail(`${kfile}: resource "${r}" does not exist`);
    if (fs.statSync(p).isDirectory()) {
      for (const e of accumulate(p, [...stack, dir])) add(e, `${kfile}: resource "${r}"`);
    } else {
      const text = readLocal(dir, r, `${kfile}: resources`).toString("utf8");
      for (const obj of parseAll(text, p)) {
        if (!isMap(obj) || !obj.kind || !isMap(obj.metadata) || !obj.metadata.name)
          fail(`${p}: a document without kind or metadata.name`);
        if (/List$/.test(obj.kind)) fail(`${p}: kind "${obj.kind}" (a list) is not implemented`);
        add({ obj, hash: false }, p);
      }
    }
  }

  // generators
  for (const [field, kind] of [["configMapGenerator", "ConfigMap"], ["secretGenerator", "Secret"]]) {
    for (const g of listOf(k[field], `${kfile}: ${field}`)) {
      const where = `${kfile}: ${field} "${g && g.name}"`;
      checkFields(g, SUPPORTED.generator, where);
      if (!g.name) fail(`${where}: no name`);
      if (g.type !== undefined && kind !== "Secret") fail(`${where}: "type" is for secretGenerator only`);
      const obj = generate(kind, g, dir, where);
      const behavior = g.behavior || "create";
      if (behavior === "create") {
        add({ obj, hash: true }, where);
        continue;
      }
      if (behavior !== "merge" && behavior !== "replace") fail(`${where}: behavior "${behavior}" is not create, merge or replace`);
      const i = res.findIndex((r) => r.obj.kind === kind && r.obj.metadata.name === g.name && sameNs(nsOf(r.obj), g.namespace));
      if (i < 0) fail(`${where}: behavior ${behavior}, but no ${kind} "${g.name}" comes from the resources`);
      const old = res[i].obj;
      const merged = clone(old);
      for (const f of ["data", "binaryData"]) {
        const data = behavior === "merge" ? { ...(old[f] || {}), ...(obj[f] || {}) } : obj[f];
        if (data && Object.keys(data).length) merged[f] = data;
        else delete merged[f];
      }
      if (kind === "Secret" && g.type !== undefined) merged.type = obj.type;
      for (const f of ["labels", "annotations"]) {
        const m = { ...(old.metadata[f] || {}), ...(obj.metadata[f] || {}) };
        if (Object.keys(m).length) merged.metadata[f] = m;
      }
      res[i] = { obj: merged, hash: res[i].hash };
    }
  }

  // transformers, in kustomize's order
  for (const [n, p] of listOf(k.patches, `${kfile}: patches`).entries()) applyPatch(res, p, dir, `${kfile}: patches[${n}]`);
  if (k.namespace !== undefined && k.namespace !== null && k.namespace !== "") {
    if (typeof k.namespace !== "string") fail(`${kfile}: namespace is not a string`);
    for (const { obj } of res) {
      if (CLUSTER_SCOPED.has(obj.kind)) continue;
      if ((obj.kind === "RoleBinding" || obj.kind === "ClusterRoleBinding") && Array.isArray(obj.subjects))
        fail(`${kfile}: namespace on ${idString(obj)}: the subjects of role bindings are not implemented`);
      obj.metadata.namespace = k.namespace;
    }
  }
  for (const [n, l] of listOf(k.labels, `${kfile}: labels`).entries()) applyLabels(res, l, `${kfile}: labels[${n}]`);
  for (const r of listOf(k.replicas, `${kfile}: replicas`)) applyReplicas(res, r, kfile);
  for (const im of listOf(k.images, `${kfile}: images`)) applyImage(res, im, kfile);
  return res;
}

function sameId(a, b) {
  const x = gvk(a), y = gvk(b);
  return x.group === y.group && x.version === y.version && x.kind === y.kind
    && a.metadata.name === b.metadata.name && sameNs(nsOf(a), nsOf(b));
}

// ---- generators ----
function literal(src, where) {
  if (typeof src !== "string") fail(`${where}: a literal is not a string`);
  const eq = src.indexOf("=");
  if (eq <= 0) fail(`${where}: literal "${src}" is not KEY=VALUE`);
  let value = src.slice(eq + 1);
  // kustomize drops one pair of matching quotes around the value
  if (value.length >= 2 && value[0] === value[value.length - 1] && (value[0] === '"' || value[0] === "'")) value = value.slice(1, -1);
  return [src.slice(0, eq), value];
}
function generate(kind, g, dir, where) {
  const entries = [];
  for (const l of listOf(g.literals, `${where}: literals`)) entries.push([...literal(l, where), null]);
  for (const f of listOf(g.files, `${where}: files`)) {
    if (typeof f !== "string") fail(`${where}: a file is not a path`);
    const eq = f.indexOf("=");
    const key = eq < 0 ? path.basename(f) : f.slice(0, eq);
    const file = eq < 0 ? f : f.slice(eq + 1);
    if (!key) fail(`${where}: file "${f}" has an empty key`);
    entries.push([key, null, readLocal(dir, file, where)]);
  }
  const obj = { apiVersion: "v1", kind, metadata: { name: g.name } };
  if (g.namespace) obj.metadata.namespace = g.namespace;
  const data = {}, binary = {};
  for (const [key, value, bytes] of entries) {
    if (!/^[-._a-zA-Z0-9]+$/.test(key)) fail(`${where}: "${key}" is not a valid ${kind} key`);
    if (key in data || key in binary) fail(`${where}: key "${key}" appears twice`);
    const buf = bytes || Buffer.from(value, "utf8");
    if (kind === "Secret") data[key] = buf.toString("base64");
    else if (bytes && !isUtf8(bytes)) binary[key] = bytes.toString("base64");
    else data[key] = buf.toString("utf8");
  }
  if (kind === "Secret") obj.type = g.type || "Opaque";
  if (Object.keys(data).length) obj.data = data;
  if (Object.keys(binary).length) obj.binaryData = binary;
  return obj;
}
const isUtf8 = (buf) => {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
};

// ---- the name hash: kustomize's api/hasher ----
// sha256 of the JSON (Go's encoding: keys sorted, <, > and & escaped) of {data, kind, name} for
// a ConfigMap (binaryData too when present) and {data, kind, name, type} for a Secret
// (stringData too when present); the first 10 hex digits with 0, 1, 3, a and e replaced so that
// no word can form. kustomize v5 looks the name up with yaml.Lookup("metadata/name"), which
// finds nothing, so "name" is always "" in the hash: the same content hashes alike whatever its
// name, as kubectl's output shows (ferrule-env-7f5gt97db9).
function goJson(v) {
  if (isMap(v)) {
    const keys = Object.keys(v).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    return `{${keys.map((key) => `${goJson(key)}:${goJson(v[key])}`).join(",")}}`;
  }
  if (Array.isArray(v)) return `[${v.map(goJson).join(",")}]`;
  const s = JSON.stringify(v === undefined ? null : v);
  if (typeof v !== "string") return s;
  return s.replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
function nameHash(obj) {
  const field = (f) => (obj[f] === undefined ? "" : obj[f]);
  let m;
  if (obj.kind === "ConfigMap") {
    m = { kind: "ConfigMap", name: "", data: field("data") };
    if (isMap(obj.binaryData)) m.binaryData = obj.binaryData;
  } else if (obj.kind === "Secret") {
    m = { kind: "Secret", type: field("type"), name: "", data: field("data") };
    if (isMap(obj.stringData)) m.stringData = obj.stringData;
  } else {
    fail(`a hash suffix for ${idString(obj)} is not implemented (ConfigMap and Secret only)`);
  }
  const hex = crypto.createHash("sha256").update(goJson(m)).digest("hex");
  return hex.slice(0, 10).replace(/[013ae]/g, (c) => ({ 0: "g", 1: "h", 3: "k", a: "m", e: "t" })[c]);
}

// ---- target selectors (patches) ----
const anchored = (re) => new RegExp(`^(?:${re})$`);
function selects(target, obj, where) {
  checkFields(target, SUPPORTED.target, `${where}: target`);
  const id = gvk(obj);
  for (const f of ["group", "version", "kind"])
    if (target[f] !== undefined && !anchored(target[f]).test(id[f])) return false;
  if (target.name !== undefined && !anchored(target.name).test(obj.metadata.name)) return false;
  if (target.namespace !== undefined && !anchored(target.namespace).test(nsOf(obj))) return false;
  if (target.labelSelector !== undefined) {
    const labels = obj.metadata.labels || {};
    for (const term of String(target.labelSelector).split(",")) {
      const m = term.trim().match(/^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/);
      if (!m) fail(`${where}: labelSelector "${term}" is not implemented (KEY=VALUE and KEY!=VALUE only)`);
      if ((labels[m[1]] === m[3]) !== (m[2] !== "!=")) return false;
    }
  }
  return true;
}

// ---- patches ----
function applyPatch(res, p, dir, where) {
  checkFields(p, SUPPORTED.patches, where);
  if ((p.path === undefined) === (p.patch === undefined)) fail(`${where}: needs exactly one of path and patch`);
  const text = p.path !== undefined ? readLocal(dir, p.path, where).toString("utf8") : String(p.patch);
  const docs = parseAll(text, p.path !== undefined ? path.resolve(dir, p.path) : where);
  if (docs.length === 0) fail(`${where}: the patch is empty`);
  if (docs.length === 1 && Array.isArray(docs[0])) {
    if (!p.target) fail(`${where}: a JSON 6902 patch needs a target`);
    const hits = res.filter((r) => selects(p.target, r.obj, where));
    if (hits.length === 0) fail(`${where}: the target selects no object`);
    for (const r of hits) r.obj = json6902(r.obj, docs[0], `${where} on ${idString(r.obj)}`);
    return;
  }
  for (const patch of docs) {
    if (!isMap(patch)) fail(`${where}: a strategic merge patch is not a mapping`);
    let hits;
    if (p.target) {
      hits = res.filter((r) => selects(p.target, r.obj, where));
    } else {
      if (!patch.kind || !isMap(patch.metadata) || !patch.metadata.name) fail(`${where}: a patch without a target needs kind and metadata.name`);
      hits = res.filter((r) => sameId(r.obj, patch) || (!patch.apiVersion && r.obj.kind === patch.kind
        && r.obj.metadata.name === patch.metadata.name && sameNs(nsOf(r.obj), nsOf(patch))));
      if (hits.length !== 1) fail(`${where}: ${hits.length} objects match ${patch.kind}/${patch.metadata.name} (one must)`);
    }
    if (hits.length === 0) fail(`${where}: the target selects no object`);
    for (const r of hits) {
      const body = clone(patch);
      // with a target, the patch's own name does not rename what it patches
      if (p.target) {
        for (const f of ["apiVersion", "kind"]) delete body[f];
        if (isMap(body.metadata)) { delete body.metadata.name; delete body.metadata.namespace; }
      }
      r.obj = smp(r.obj, body, [], `${where} on ${idString(r.obj)}`);
    }
  }
}

// JSON 6902 (RFC 6902) on a plain object; JSON pointers (RFC 6901), "-" appends.
function json6902(obj, ops, where) {
  obj = clone(obj);
  const parse = (ptr) => {
    if (typeof ptr !== "string" || (ptr !== "" && ptr[0] !== "/")) fail(`${where}: path "${ptr}" is not a JSON pointer`);
    return ptr === "" ? [] : ptr.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  };
  const parent = (tokens, op) => {
    let cur = obj;
    for (const t of tokens.slice(0, -1)) {
      cur = Array.isArray(cur) ? cur[index(cur, t, false, op)] : isMap(cur) && Object.hasOwn(cur, t) ? cur[t] : undefined;
      if (cur === undefined) fail(`${where}: ${op.op} "${op.path}": "${t}" does not exist`);
    }
    if (!isMap(cur) && !Array.isArray(cur)) fail(`${where}: ${op.op} "${op.path}": the parent is not an object or a list`);
    return cur;
  };
  const index = (list, t, adding, op) => {
    if (adding && t === "-") return list.length;
    if (!/^(0|[1-9][0-9]*)$/.test(t)) fail(`${where}: ${op.op} "${op.path}": "${t}" is not a list index`);
    const i = Number(t);
    if (i > list.length || (!adding && i === list.length)) fail(`${where}: ${op.op} "${op.path}": index ${i} is out of range (${list.length} items)`);
    return i;
  };
  const get = (tokens, op) => {
    if (tokens.length === 0) return obj;
    const p = parent(tokens, op), t = tokens[tokens.length - 1];
    if (Array.isArray(p)) return p[index(p, t, false, op)];
    if (!Object.hasOwn(p, t)) fail(`${where}: ${op.op} "${op.path}": "${t}" does not exist`);
    return p[t];
  };
  const remove = (tokens, op) => {
    const p = parent(tokens, op), t = tokens[tokens.length - 1];
    if (Array.isArray(p)) return p.splice(index(p, t, false, op), 1)[0];
    if (!Object.hasOwn(p, t)) fail(`${where}: ${op.op} "${op.path}": "${t}" does not exist`);
    const v = p[t];
    delete p[t];
    return v;
  };
  const add = (tokens, value, op) => {
    if (tokens.length === 0) { obj = value; return; }
    const p = parent(tokens, op), t = tokens[tokens.length - 1];
    if (Array.isArray(p)) p.splice(index(p, t, true, op), 0, value);
    else p[t] = value;
  };
  for (const op of ops) {
    if (!isMap(op)) fail(`${where}: an operation is not a mapping`);
    const tokens = parse(op.path);
    switch (op.op) {
      case "add":
        if (!("value" in op)) fail(`${where}: add "${op.path}" has no value`);
        add(tokens, clone(op.value), op);
        break;
      case "remove":
        remove(tokens, op);
        break;
      case "replace":
        if (!("value" in op)) fail(`${where}: replace "${op.path}" has no value`);
        get(tokens, op);
        if (tokens.length === 0) obj = clone(op.value);
        else {
          const p = parent(tokens, op), t = tokens[tokens.length - 1];
          p[Array.isArray(p) ? index(p, t, false, op) : t] = clone(op.value);
        }
        break;
      case "move":
        add(tokens, remove(parse(op.from), op), op);
        break;
      case "copy":
        add(tokens, clone(get(parse(op.from), op)), op);
        break;
      case "test":
        if (JSON.stringify(canonical(get(tokens, op))) !== JSON.stringify(canonical(op.value)))
          fail(`${where}: test "${op.path}" failed`);
        break;
      default:
        fail(`${where}: operation "${op.op}" is not add, remove, replace, move, copy or test`);
    }
  }
  if (!isMap(obj) || !obj.kind || !isMap(obj.metadata)) fail(`${where}: the patch leaves no object`);
  return obj;
}

// Strategic merge: maps merge, null deletes, lists named below merge by their key (the
// x-kubernetes-patch-merge-key of the Kubernetes API), other lists are replaced; "$patch: delete"
// and "$patch: replace" work on maps and on items of keyed lists. A merged list holds the
// patch's items first, then the items the patch does not name, as kustomize orders it.
const MERGE_KEYS = {
  containers: "name", initContainers: "name", ephemeralContainers: "name", env: "name", volumes: "name",
  volumeMounts: "mountPath", volumeDevices: "devicePath", imagePullSecrets: "name", hostAliases: "ip",
};
function smp(dst, patch, at, where) {
  if (!isMap(patch)) return clone(patch);
  const directive = patch.$patch;
  if (directive === "replace") { const p = clone(patch); delete p.$patch; return p; }
  if (directive !== undefined && directive !== "merge") fail(`${where}: "$patch: ${directive}" at /${at.join("/")} is not implemented here`);
  const out = isMap(dst) ? clone(dst) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key === "$patch") continue;
    if (key.startsWith("$")) fail(`${where}: directive "${key}" at /${at.join("/")} is not implemented`);
    if (value === null) { delete out[key]; continue; }
    if (isMap(value) && value.$patch === "delete") { delete out[key]; continue; }
    if (Array.isArray(value) && Array.isArray(out[key])) out[key] = mergeList(out[key], value, key, [...at, key], where);
    else if (isMap(value)) out[key] = smp(out[key], value, [...at, key], where);
    else out[key] = clone(value);
  }
  return out;
}
function mergeList(dst, patch, field, at, where) {
  const key = MERGE_KEYS[field];
  // the Service's ports merge on "port"; a container's on "containerPort"
  const portKey = field === "ports" ? (patch.every((p) => isMap(p) && "containerPort" in p) ? "containerPort" : "port") : undefined;
  const k = key || portKey;
  if (!k || !patch.every(isMap) || !dst.every(isMap)) return patch.filter((p) => !(isMap(p) && p.$patch)).map(clone);
  // kustomize's order: the patch's items first, in the patch's order, then the others as they were
  const out = [];
  const named = new Set();
  for (const item of patch) {
    if (!(k in item)) fail(`${where}: an item of /${at.join("/")} has no "${k}"`);
    named.add(item[k]);
    if (item.$patch === "delete") continue;
    const old = dst.find((d) => d[k] === item[k]);
    if (old) out.push(smp(old, item, [...at, String(item[k])], where));
    else { const n = clone(item); delete n.$patch; out.push(n); }
  }
  for (const d of dst) if (!named.has(d[k])) out.push(clone(d));
  return out;
}

// ---- labels: kustomize's field specs ----
// [kind, group or null for any, path, create]; "[]" walks every item of a list
const TEMPLATE_LABELS = [
  ["ReplicationController", "", "spec/template/metadata/labels", true],
  ["Deployment", null, "spec/template/metadata/labels", true],
  ["ReplicaSet", null, "spec/template/metadata/labels", true],
  ["DaemonSet", null, "spec/template/metadata/labels", true],
  ["StatefulSet", "apps", "spec/template/metadata/labels", true],
  ["StatefulSet", "apps", "spec/volumeClaimTemplates[]/metadata/labels", true],
  ["Job", "batch", "spec/template/metadata/labels", true],
  ["CronJob", "batch", "spec/jobTemplate/metadata/labels", true],
  ["CronJob", "batch", "spec/jobTemplate/spec/template/metadata/labels", true],
];
const affinity = (kind) => ["podAffinity", "podAntiAffinity"].flatMap((a) => [
  [kind, "apps", `spec/template/spec/affinity/${a}/preferredDuringSchedulingIgnoredDuringExecution[]/podAffinityTerm/labelSelector/matchLabels`, false],
  [kind, "apps", `spec/template/spec/affinity/${a}/requiredDuringSchedulingIgnoredDuringExecution[]/labelSelector/matchLabels`, false],
]);
const COMMON_LABELS = [
  [null, null, "metadata/labels", true],
  ["Service", "", "spec/selector", true],
  ["ReplicationController", "", "spec/selector", true],
  ["ReplicationController", "", "spec/template/metadata/labels", true],
  ["Deployment", null, "spec/selector/matchLabels", true],
  ["Deployment", null, "spec/template/metadata/labels", true],
  ...affinity("Deployment"),
  ["Deployment", "apps", "spec/template/spec/topologySpreadConstraints[]/labelSelector/matchLabels", false],
  ["ReplicaSet", null, "spec/selector/matchLabels", true],
  ["ReplicaSet", null, "spec/template/metadata/labels", true],
  ["DaemonSet", null, "spec/selector/matchLabels", true],
  ["DaemonSet", null, "spec/template/metadata/labels", true],
  ["StatefulSet", "apps", "spec/selector/matchLabels", true],
  ["StatefulSet", "apps", "spec/template/metadata/labels", true],
  ...affinity("StatefulSet"),
  ["StatefulSet", "apps", "spec/template/spec/topologySpreadConstraints[]/labelSelector/matchLabels", false],
  ["StatefulSet", "apps", "spec/volumeClaimTemplates[]/metadata/labels", true],
  ["Job", "batch", "spec/selector/matchLabels", false],
  ["Job", "batch", "spec/template/metadata/labels", true],
  ["CronJob", "batch", "spec/jobTemplate/spec/selector/matchLabels", false],
  ["CronJob", "batch", "spec/jobTemplate/metadata/labels", true],
  ["CronJob", "batch", "spec/jobTemplate/spec/template/metadata/labels", true],
  ["PodDisruptionBudget", "policy", "spec/selector/matchLabels", false],
  ["NetworkPolicy", "networking.k8s.io", "spec/podSelector/matchLabels", false],
  ["NetworkPolicy", "networking.k8s.io", "spec/ingress[]/from[]/podSelector/matchLabels", false],
  ["NetworkPolicy", "networking.k8s.io", "spec/egress[]/to[]/podSelector/matchLabels", false],
];
function setAt(node, segments, create, set) {
  const [seg, ...rest] = segments;
  const list = seg.endsWith("[]");
  const name = list ? seg.slice(0, -2) : seg;
  if (!isMap(node)) return;
  if (list) {
    if (Array.isArray(node[name])) for (const item of node[name]) setAt(item, rest, create, set);
    return;
  }
  if (rest.length === 0) {
    if (node[name] === undefined || node[name] === null) { if (!create) return; node[name] = {}; }
    if (!isMap(node[name])) fail(`labels: "${name}" is not a mapping`);
    set(node[name]);
    return;
  }
  if (node[name] === undefined || node[name] === null) { if (!create) return; node[name] = {}; }
  setAt(node[name], rest, create, set);
}
function applyLabels(res, l, where) {
  checkFields(l, SUPPORTED.labels, where);
  if (!isMap(l.pairs)) fail(`${where}: no pairs`);
  const specs = l.includeSelectors ? COMMON_LABELS
    : [[null, null, "metadata/labels", true], ...(l.includeTemplates ? TEMPLATE_LABELS : [])];
  for (const { obj } of res) {
    const id = gvk(obj);
    for (const [kind, group, p, create] of specs) {
      if (kind !== null && kind !== id.kind) continue;
      if (group !== null && group !== id.group) continue;
      setAt(obj, p.split("/"), create, (m) => {
        for (const [key, value] of Object.entries(l.pairs)) m[key] = value === null ? "" : String(value);
      });
    }
  }
}

// ---- replicas and images ----
const REPLICA_KINDS = ["Deployment", "ReplicationController", "ReplicaSet", "StatefulSet"];
function applyReplicas(res, r, kfile) {
  checkFields(r, SUPPORTED.replicas, `${kfile}: replicas`);
  if (!Number.isInteger(r.count)) fail(`${kfile}: replicas "${r.name}": count is not an integer`);
  const hits = res.filter(({ obj }) => obj.metadata.name === r.name && REPLICA_KINDS.includes(obj.kind));
  if (hits.length === 0) fail(`${kfile}: replicas: no ${REPLICA_KINDS.join(", ")} named "${r.name}"`);
  for (const { obj } of hits) {
    obj.spec = isMap(obj.spec) ? obj.spec : {};
    obj.spec.replicas = r.count;
  }
}
function applyImage(res, im, kfile) {
  checkFields(im, SUPPORTED.images, `${kfile}: images`);
  if (!im.name) fail(`${kfile}: an image without a name`);
  const escaped = String(im.name).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const matches = new RegExp(`^${escaped}(@sha256)?(:[a-zA-Z0-9_.{}-]*)?$`);
  const update = (image) => {
    let name = image, tag = "", digest = "";
    const at = name.indexOf("@");
    if (at >= 0) { digest = name.slice(at + 1); name = name.slice(0, at); }
    const colon = name.lastIndexOf(":");
    if (colon > name.lastIndexOf("/")) { tag = name.slice(colon + 1); name = name.slice(0, colon); }
    if (im.newName) name = String(im.newName);
    if (im.newTag !== undefined && im.newTag !== "" && im.digest) { tag = String(im.newTag); digest = String(im.digest); }
    else if (im.newTag !== undefined && im.newTag !== "") { tag = String(im.newTag); digest = ""; }
    else if (im.digest) { digest = String(im.digest); tag = ""; }
    return name + (tag ? `:${tag}` : "") + (digest ? `@${digest}` : "");
  };
  const walk = (node) => {
    if (Array.isArray(node)) { node.forEach(walk); return; }
    if (!isMap(node)) return;
    for (const [key, value] of Object.entries(node)) {
      if ((key === "containers" || key === "initContainers") && Array.isArray(value)) {
        for (const c of value)
          if (isMap(c) && typeof c.image === "string" && matches.test(c.image)) c.image = update(c.image);
      }
      walk(value);
    }
  };
  for (const { obj } of res) walk(obj);
}

// ---- references to generated names ----
// Where pod specs name a ConfigMap or a Secret (kustomize's nameReference configuration).
function podSpecs(obj) {
  const s = obj.spec;
  if (!isMap(s)) return [];
  if (obj.kind === "Pod") return [s];
  if (obj.kind === "CronJob") return [s.jobTemplate?.spec?.template?.spec].filter(isMap);
  if (["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "PodTemplate"].includes(obj.kind))
    return [s.template?.spec].filter(isMap);
  return [];
}
function* references(spec) {
  const at = (o, f) => (isMap(o) && typeof o[f] === "string" ? { o, f } : null);
  for (const v of spec.volumes || []) {
    yield ["ConfigMap", at(v.configMap, "name")];
    yield ["Secret", at(v.secret, "secretName")];
    for (const src of v.projected?.sources || []) {
      yield ["ConfigMap", at(src.configMap, "name")];
      yield ["Secret", at(src.secret, "name")];
    }
  }
  for (const s of spec.imagePullSecrets || []) yield ["Secret", at(s, "name")];
  for (const list of ["containers", "initContainers", "ephemeralContainers"]) {
    for (const c of spec[list] || []) {
      for (const e of c.envFrom || []) {
        yield ["ConfigMap", at(e.configMapRef, "name")];
        yield ["Secret", at(e.secretRef, "name")];
      }
      for (const e of c.env || []) {
        yield ["ConfigMap", at(e.valueFrom?.configMapKeyRef, "name")];
        yield ["Secret", at(e.valueFrom?.secretKeyRef, "name")];
      }
    }
  }
}

// ---- the top level ----
export function render(dir) {
  const res = accumulate(dir);
  const renamed = [];
  for (const r of res) {
    if (!r.hash) continue;
    const old = r.obj.metadata.name;
    r.obj.metadata.name = `${old}-${nameHash(r.obj)}`;
    renamed.push({ kind: r.obj.kind, ns: nsOf(r.obj), old, name: r.obj.metadata.name });
  }
  for (const { obj } of res) {
    for (const spec of podSpecs(obj)) {
      for (const [kind, ref] of references(spec)) {
        if (!ref) continue;
        const hit = renamed.filter((n) => n.kind === kind && n.old === ref.o[ref.f] && sameNs(n.ns, nsOf(obj)));
        if (hit.length > 1) fail(`${idString(obj)}: ${kind} "${ref.o[ref.f]}" is ambiguous`);
        if (hit.length === 1) ref.o[ref.f] = hit[0].name;
      }
    }
  }
  return sortLegacy(res.map((r) => r.obj));
}

// kustomize's legacy order: these kinds first and last, in this order; the others between,
// by group_version_kind; then by namespace and name.
const ORDER_FIRST = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
  "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Secret",
  "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
  "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"];
const ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];
function sortLegacy(objs) {
  const rank = (kind) => {
    const f = ORDER_FIRST.indexOf(kind);
    if (f >= 0) return f - ORDER_FIRST.length;
    const l = ORDER_LAST.indexOf(kind);
    return l >= 0 ? 1 + l : 0;
  };
  const gvkString = (o) => { const id = gvk(o); return `${id.group || "~G"}_${id.version || "~V"}_${id.kind}`; };
  const key = (o) => `${gvkString(o)}|${nsOf(o) || "~X"}|${o.metadata.name}`;
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return [...objs].sort((a, b) => rank(a.kind) - rank(b.kind) || cmp(gvkString(a), gvkString(b)) || cmp(key(a), key(b)));
}

export const toYaml = (objs) => objs.map(dump).join("---\n");

// ---- comparing two renderings ----
// Key order does not count (the objects are compared as values); list order does, since
// kustomize keeps the order of every list it writes.
function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (isMap(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]));
  return v;
}
function differences(a, b, at, out) {
  if (out.length >= 40) return;
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i >= a.length) out.push(`${at}/${i}: only in ours: ${JSON.stringify(b[i])}`);
      else if (i >= b.length) out.push(`${at}/${i}: only in kubectl's: ${JSON.stringify(a[i])}`);
      else differences(a[i], b[i], `${at}/${i}`, out);
    }
    return;
  }
  if (isMap(a) && isMap(b)) {
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
      const p = `${at}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`;
      if (!(k in b)) out.push(`${p}: only in kubectl's: ${JSON.stringify(a[k])}`);
      else if (!(k in a)) out.push(`${p}: only in ours: ${JSON.stringify(b[k])}`);
      else differences(a[k], b[k], p, out);
    }
    return;
  }
  if (JSON.stringify(a) !== JSON.stringify(b))
    out.push(`${at || "/"}: kubectl has ${JSON.stringify(a)}, ours ${JSON.stringify(b)}`);
}
export function compare(reference, ours) {
  const id = (o) => `${o.apiVersion} ${o.kind} ${nsOf(o) || "-"}/${o.metadata?.name}`;
  const index = (objs, whose) => {
    const m = new Map();
    for (const o of objs) {
      if (!isMap(o) || !isMap(o.metadata)) fail(`${whose} rendering holds a document that is not an object`);
      if (m.has(id(o))) fail(`${whose} rendering holds ${id(o)} twice`);
      m.set(id(o), o);
    }
    return m;
  };
  const theirs = index(reference, "kubectl's"), mine = index(ours, "our");
  const problems = [];
  for (const k of theirs.keys()) if (!mine.has(k)) problems.push(`${k}: only in kubectl's rendering`);
  for (const k of mine.keys()) if (!theirs.has(k)) problems.push(`${k}: only in ours`);
  for (const [k, o] of theirs) {
    if (!mine.has(k)) continue;
    const diffs = [];
    differences(canonical(o), canonical(mine.get(k)), "", diffs);
    for (const d of diffs) problems.push(`${k}: ${d}`);
  }
  return problems;
}

// ---- command line ----
function main() {
  const args = process.argv.slice(2);
  const opts = {};
  const rest = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--modules" || args[i] === "--compare") {
      if (i + 1 >= args.length) usage(`option "${args[i]}" needs a value`);
      opts[args[i].slice(2)] = args[++i];
    } else if (args[i].startsWith("--")) usage(`unknown option "${args[i]}"`);
    else rest.push(args[i]);
  }
  if (!opts.modules || rest.length !== 1) usage("--modules and one kustomization folder are required");
  loadYaml(opts.modules);
  try {
    const objs = render(rest[0]);
    if (!opts.compare) {
      process.stdout.write(toYaml(objs));
      return;
    }
    const reference = parseAll(fs.readFileSync(opts.compare, "utf8"), opts.compare);
    // compare what a reader of the two files gets: ours goes through YAML text too
    const problems = compare(reference, parseAll(toYaml(objs), "our rendering"));
    if (problems.length) {
      for (const p of problems) console.error(`kustomize.mjs: ${rest[0]}: ${p}`);
      console.error(`kustomize.mjs: ${rest[0]}: renders differently from "kubectl kustomize" (${problems.length === 1 ? "the difference" : `${problems.length} differences`} above)`);
      process.exit(1);
    }
    console.log(`kustomize.mjs: ${rest[0]}: the same ${objs.length} objects as "kubectl kustomize"`);
  } catch (e) {
    if (!(e instanceof KustomizeError)) throw e;
    console.error(`kustomize.mjs: ${e.message}`);
    process.exit(1);
  }
}
function usage(msg) {
  console.error(`kustomize.mjs: ${msg}`);
  console.error("usage: node kustomize.mjs --modules DIR [--compare RENDERED.yaml] KUSTOMIZATION_DIR");
  process.exit(2);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) main();
