#!/usr/bin/env bash
# Validates the Kubernetes manifests in docker/k8s/ offline, without a cluster:
#
#   1. kustomization.yaml lists every *.yaml / *.yml file in docker/k8s/ (top level) and each
#      listed file exists;
#   2. every listed manifest passes `kubernetes-validate --strict` (the Kubernetes OpenAPI
#      schemas as JSON schema, rejecting unknown fields) for each version in K8S_VERSIONS. The
#      tool only WARNs, with exit status 0, when it has no schema for a kind/apiVersion; this
#      script counts that as a failure, so a typo in apiVersion cannot pass unnoticed;
#   2b. if kubectl is installed: `kubectl kustomize docker/k8s/` builds (what `kubectl apply
#      -k` would send, image renamed and namespace set) and its output validates the same way;
#   3. cross-references a schema cannot see: selectors against pod labels, Service target
#      ports, HPA and PDB targets, ConfigMap/Secret/PVC references, DBN_* setting names,
#      security settings, termination grace against DBN_SHUTDOWN_GRACE, the worker's memory
#      limit against DBN_MAX_TRAIN_MEMORY_MB;
#   4. the KServe example in docker/k8s/kserve/ (CRDs, whose schemas are not bundled): only
#      its embedded core/v1 parts (containers, volumes, pod settings) are validated strictly;
#      the KServe-specific fields are checked against a list of known field names only.
#
# Usage: bench/k8s-validate.sh            (from anywhere)
#   K8S_VERSIONS="1.30.0 1.37.0"  Kubernetes versions to validate against (the tool bundles
#                                 schemas for 1.25-1.37)
#   PYTHON=…                      interpreter that has (or gets) kubernetes-validate
#                                 (default: the virtual environment /tmp/dbn-ci-venv, the one
#                                 .ci/run makes for moto; created with `python3 -m venv` when
#                                 missing, because a system Python may refuse pip installs)
# Exit status: 0 when everything passes, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_DIR="$ROOT/docker/k8s"
VALIDATOR_VERSION="1.37.0"
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"
if [[ -z "${PYTHON:-}" ]]; then
    venv=/tmp/dbn-ci-venv
    # Made again when it lacks pip (a `python3 -m venv` that failed half-way leaves one so).
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        python3 -m venv "$venv" || {
            echo "cannot make a virtual environment with python3 -m venv (on Debian: apt-get install python3-venv)" >&2
            exit 1
        }
    fi
    PYTHON="$venv/bin/python"
fi

if ! "$PYTHON" -c 'import kubernetes_validate' 2>/dev/null; then
    echo "== installing kubernetes-validate==$VALIDATOR_VERSION"
    "$PYTHON" -m pip install --quiet "kubernetes-validate==$VALIDATOR_VERSION"
fi
# The kubernetes-validate command, run through the same interpreter that has the package
# (a `kubernetes-validate` on PATH may belong to another Python).
VALIDATE=("$PYTHON" -m kubernetes_validate)
installed="$("${VALIDATE[@]}" --version)"
if [[ "$installed" != "$VALIDATOR_VERSION" ]]; then
    echo "note: kubernetes-validate $installed is installed; this script was written for $VALIDATOR_VERSION"
fi

# --- 1. kustomization.yaml against the directory ------------------------------------------
echo "== kustomization.yaml lists every manifest in docker/k8s/"
# (Captured first: a failure inside a process substitution would not stop the script.)
listed="$("$PYTHON" - "$K8S_DIR" <<'PY'
import os, sys, yaml
k8s = sys.argv[1]
with open(os.path.join(k8s, "kustomization.yaml")) as f:
    kust = yaml.safe_load(f)
listed = kust.get("resources") or []
errors = []
if len(set(listed)) != len(listed):
    errors.append("kustomization.yaml lists a file twice")
for r in listed:
    path = os.path.join(k8s, r)
    if os.path.dirname(os.path.normpath(r)):
        errors.append(f"{r}: only files at the top level of docker/k8s/ belong in resources")
    elif not os.path.isfile(path):
        errors.append(f"{r}: listed in kustomization.yaml but missing")
present = sorted(
    n for n in os.listdir(k8s)
    if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml"
    and os.path.isfile(os.path.join(k8s, n))
)
for n in present:
    if n not in listed:
        errors.append(f"{n}: in docker/k8s/ but not listed in kustomization.yaml")
for e in errors:
    print("ERROR " + e, file=sys.stderr)
if errors:
    sys.exit(1)
print("\n".join(listed))
PY
)"
mapfile -t RESOURCES <<<"$listed"
printf '   %s\n' "${RESOURCES[@]}"

# --- 2. strict schema validation ----------------------------------------------------------
version_args=()
for v in $K8S_VERSIONS; do version_args+=(--kubernetes-version "$v"); done
files=()
for r in "${RESOURCES[@]}"; do files+=("$K8S_DIR/$r"); done
echo "== ${VALIDATE[*]} --strict ${version_args[*]} <${#files[@]} files>"
set +e
out="$(cd "$K8S_DIR" && "${VALIDATE[@]}" --strict "${version_args[@]}" "${RESOURCES[@]}" 2>&1)"
rc=$?
set -e
echo "$out"
# Anything but INFO lines (WARN: no schema, ERROR, FATAL) fails, whatever the exit status.
if [[ $rc -ne 0 ]] || grep -qv '^INFO ' <<<"$out"; then
    echo "FAILED: schema validation (exit status $rc)" >&2
    exit 1
fi
passed="$(grep -c '^INFO .* passed ' <<<"$out")"

# --- 2b. what `kubectl apply -k` would send: the kustomize build, validated the same way ---
if command -v kubectl >/dev/null 2>&1; then
    rendered="$(mktemp --suffix=.yaml)"
    trap 'rm -f "$rendered"' EXIT
    kubectl kustomize "$K8S_DIR" >"$rendered"
    echo "== kubectl kustomize docker/k8s/ | ${VALIDATE[*]} --strict (rendered: $(grep -c '^kind: ' "$rendered") objects)"
    set +e
    out="$("${VALIDATE[@]}" --strict "${version_args[@]}" --quiet "$rendered" 2>&1)"
    rc=$?
    set -e
    [[ -n "$out" ]] && echo "$out"
    if [[ $rc -ne 0 ]] || [[ -n "$out" ]]; then
        echo "FAILED: the kustomize build does not validate (exit status $rc)" >&2
        exit 1
    fi
    echo "   passed"
else
    echo "note: kubectl not found; the kustomize build itself was not checked"
fi

# --- 3 and 4. cross-references, and the KServe example's core parts -----------------------
echo "== cross-references and the KServe example"
"$PYTHON" - "$ROOT" "$K8S_VERSIONS" "${RESOURCES[@]}" <<'PY'
import glob, os, re, sys
import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

root, versions, resources = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
k8s = os.path.join(root, "docker", "k8s")
errors, notes = [], []

def err(msg):
    errors.append(msg)

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

with open(os.path.join(k8s, "kustomization.yaml")) as f:
    kust = yaml.safe_load(f)
namespace = kust.get("namespace")
image_names = {i["name"] for i in kust.get("images") or []}

objs = []
for r in resources:
    for d in load(os.path.join(k8s, r)):
        objs.append((r, d))

def of_kind(kind):
    return {d["metadata"]["name"]: d for _, d in objs if d["kind"] == kind}

deployments = of_kind("Deployment")
configmaps = of_kind("ConfigMap")
secrets = of_kind("Secret")
pvcs = of_kind("PersistentVolumeClaim")
services = of_kind("Service")

# Setting names the server reads: every `env = "DBN_…"` in its sources, plus the ones being
# added for scaling out (named in the task; reported while the sources lack them).
source_names = set()
for src in ("src/config.rs", "src/cli/mod.rs"):
    p = os.path.join(root, src)
    if os.path.exists(p):
        source_names |= set(re.findall(r'env\s*=\s*"(DBN_[A-Z0-9_]+)"', open(p).read()))
pending = {"DBN_ROLE", "DBN_DATABASE_URL", "DBN_MODEL_STORE", "DBN_LEASE_SECS",
           "DBN_MODEL_REFRESH_SECS"}
aws = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT",
       "AWS_ALLOW_HTTP"}
known = source_names | pending | aws
missing_in_source = sorted(pending - source_names)
if missing_in_source:
    notes.append("not yet read by the sources (src/config.rs, src/cli/mod.rs): "
                 + ", ".join(missing_in_source))

def check_names(names, where):
    for n in names:
        if n not in known:
            err(f"{where}: {n} is not a setting the server reads (typo?)")

for name, cm in configmaps.items():
    check_names((cm.get("data") or {}).keys(), f"ConfigMap {name}")
for name, s in secrets.items():
    check_names(list((s.get("stringData") or {}).keys()) + list((s.get("data") or {}).keys()),
                f"Secret {name}")
    placeholders = [k for k, v in (s.get("stringData") or {}).items() if "REPLACE_ME" in str(v)]
    if placeholders:
        notes.append(f"Secret {name} still holds placeholders (replace before applying): "
                     + ", ".join(placeholders))

for r, d in objs:
    if d["kind"] != "Namespace" and namespace and d["metadata"].get("namespace", namespace) != namespace:
        err(f"{r}: namespace {d['metadata'].get('namespace')} is not {namespace}")

def mib(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi|M|G)?", str(q))
    if not m:
        raise ValueError(f"unparsed quantity {q}")
    n, unit = int(m.group(1)), m.group(2)
    return {"Mi": n, "Gi": n * 1024, "M": n * 1e6 / 2**20, "G": n * 1e9 / 2**20, None: n / 2**20}[unit]

def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())

for name, dep in deployments.items():
    where = f"Deployment {name}"
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    if not matches(spec["selector"]["matchLabels"], labels):
        err(f"{where}: selector does not match the pod template's labels")
    for c in pod.get("topologySpreadConstraints", []):
        if not matches(c["labelSelector"]["matchLabels"], labels):
            err(f"{where}: a topology spread constraint does not select its own pods")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 10001:
        err(f"{where}: pod must run as non-root uid 10001 (the image's user)")
    if pod.get("automountServiceAccountToken") is not False:
        err(f"{where}: automountServiceAccountToken should be false")
    sa = pod.get("serviceAccountName")
    if sa and sa not in of_kind("ServiceAccount"):
        err(f"{where}: service account {sa} is not defined")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and claim not in pvcs:
            err(f"{where}: volume {v['name']} uses claim {claim}, which no manifest defines")
    for c in pod["containers"]:
        cw = f"{where} container {c['name']}"
        if c["image"].split(":")[0] not in image_names:
            err(f"{cw}: image {c['image']} is not renamed by kustomization.yaml images:")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            err(f"{cw}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            err(f"{cw}: allowPrivilegeEscalation must be false")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            err(f"{cw}: capabilities must drop ALL")
        # Effective environment: envFrom first, then env (env wins).
        envmap = {}
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                ref = ef["configMapRef"]["name"]
                if ref not in configmaps:
                    err(f"{cw}: envFrom ConfigMap {ref} is not defined")
                else:
                    envmap.update(configmaps[ref].get("data") or {})
            if "secretRef" in ef:
                ref = ef["secretRef"]["name"]
                if ref not in secrets:
                    err(f"{cw}: envFrom Secret {ref} is not defined")
                else:
                    envmap.update(secrets[ref].get("stringData") or {})
        for e in c.get("env", []):
            envmap[e["name"]] = e.get("value", "<valueFrom>")
        check_names([e["name"] for e in c.get("env", [])], cw)
        role = envmap.get("DBN_ROLE")
        if role not in ("api", "worker", "all"):
            err(f"{cw}: DBN_ROLE must be api, worker or all (got {role!r})")
        for required in ("DBN_DATABASE_URL", "DBN_MODEL_STORE"):
            if required not in envmap:
                err(f"{cw}: {required} is not set")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if ports.get("http") != 8080 or envmap.get("DBN_ADDR", "0.0.0.0:8080") != "0.0.0.0:8080":
            err(f"{cw}: expected the named port http = 8080 = DBN_ADDR")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if not p:
                err(f"{cw}: no {probe}")
                continue
            port = p["httpGet"]["port"]
            if isinstance(port, str) and port not in ports:
                err(f"{cw}: {probe} uses port {port}, which the container does not name")
        if c["readinessProbe"]["httpGet"]["path"] != "/readyz":
            err(f"{cw}: readiness should be /readyz")
        if c["livenessProbe"]["httpGet"]["path"] != "/healthz":
            err(f"{cw}: liveness should be /healthz")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        data_dir = envmap.get("DBN_DATA_DIR", "/var/lib/dbn-serve")
        m = mounts.get(data_dir)
        if not m or "emptyDir" not in volumes.get(m["name"], {}) or m.get("readOnly"):
            err(f"{cw}: {data_dir} must be a writable emptyDir")
        m = mounts.get(envmap.get("DBN_MNIST_DIR", "/mnist"))
        if not m or not m.get("readOnly"):
            err(f"{cw}: the MNIST directory must be mounted read-only")
        # Termination grace: preStop sleep + DBN_SHUTDOWN_GRACE must fit, with a margin.
        grace = int(envmap.get("DBN_SHUTDOWN_GRACE", "20"))
        pre = 0
        cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command", [])
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            pre = int(cmd[1])
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps < pre + grace + 5:
            err(f"{cw}: terminationGracePeriodSeconds {tgps} < preStop {pre} s + "
                f"DBN_SHUTDOWN_GRACE {grace} s + 5 s margin")
        if role == "worker":
            limit = mib(c["resources"]["limits"]["memory"])
            budget = int(envmap.get("DBN_MAX_TRAIN_MEMORY_MB", "8192"))
            workers = int(envmap.get("DBN_WORKERS", "1"))
            if budget * workers + 512 > limit:
                err(f"{cw}: memory limit {limit:.0f} MiB leaves under 512 MiB beside "
                    f"{workers} x DBN_MAX_TRAIN_MEMORY_MB={budget}")

for name, svc in services.items():
    sel = svc["spec"].get("selector", {})
    targets = [d for d in deployments.values()
               if matches(sel, d["spec"]["template"]["metadata"].get("labels", {}))]
    if len(targets) != 1:
        err(f"Service {name}: selector matches {len(targets)} deployments, expected 1")
        continue
    names = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    for p in svc["spec"]["ports"]:
        if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
            err(f"Service {name}: targetPort {p['targetPort']} is not a named container port")

for name, hpa in of_kind("HorizontalPodAutoscaler").items():
    ref = hpa["spec"]["scaleTargetRef"]
    dep = deployments.get(ref["name"]) if ref["kind"] == "Deployment" else None
    if dep is None:
        err(f"HPA {name}: target {ref['kind']}/{ref['name']} is not defined")
    else:
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if "cpu" not in c.get("resources", {}).get("requests", {}):
                err(f"HPA {name}: CPU utilisation needs a CPU request on {c['name']}")
    if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
        err(f"HPA {name}: minReplicas > maxReplicas")

for name, pdb in of_kind("PodDisruptionBudget").items():
    sel = pdb["spec"]["selector"]["matchLabels"]
    if not any(matches(sel, d["spec"]["template"]["metadata"].get("labels", {}))
               for d in deployments.values()):
        err(f"PodDisruptionBudget {name}: selects no deployment's pods")

# --- the KServe example: embedded core/v1 parts, strictly; CRD fields by name only ---------
def validate_core(obj, where):
    for v in versions:
        try:
            kubernetes_validate.validate(obj, v, strict=True)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            err(f"{where} (as core {obj['kind']}, Kubernetes {v}): {path}: {e.message}")
        except SchemaNotFoundError as e:
            err(f"{where}: {e.message}")

RUNTIME_SPEC = {"supportedModelFormats", "multiModel", "disabled", "protocolVersions",
                "workerSpec", "containers", "volumes", "nodeSelector", "affinity",
                "tolerations", "labels", "annotations", "imagePullSecrets", "hostIPC",
                "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas",
                "storageHelper", "builtInAdapter"}
RUNTIME_POD = {"containers", "volumes", "nodeSelector", "affinity", "tolerations",
               "imagePullSecrets", "hostIPC"}
COMPONENT_EXT = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                 "scaleMetricType", "containerConcurrency", "timeout", "canaryTrafficPercent",
                 "logger", "batcher", "labels", "annotations", "deploymentStrategy"}
IMPLEMENTATIONS = {"model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
                   "huggingface", "pmml", "lightgbm", "paddle"}
MODEL_EXT = {"modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion",
             "storage"}

kserve_files = sorted(glob.glob(os.path.join(k8s, "kserve", "*.y*ml")))
runtimes, isvcs = {}, []
for path in kserve_files:
    rel = os.path.relpath(path, root)
    for d in load(path):
        where = f"{rel} {d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ServingRuntime" and d["apiVersion"] == "serving.kserve.io/v1alpha1":
            spec = d["spec"]
            for k in set(spec) - RUNTIME_SPEC:
                err(f"{where}: unknown ServingRuntime field spec.{k}")
            pod = {k: v for k, v in spec.items() if k in RUNTIME_POD}
            validate_core({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": d["metadata"]["name"]}, "spec": pod}, where)
            runtimes[d["metadata"]["name"]] = spec
        elif d["kind"] == "InferenceService" and d["apiVersion"] == "serving.kserve.io/v1beta1":
            isvcs.append((where, d))
        else:
            err(f"{where}: unexpected kind {d['apiVersion']} {d['kind']}")
for where, d in isvcs:
    pred = d["spec"]["predictor"]
    impl = set(pred) & IMPLEMENTATIONS
    if len(impl) > 1:
        err(f"{where}: predictor names more than one implementation: {sorted(impl)}")
    if pred.get("scaleMetric") not in (None, "cpu", "memory", "concurrency", "rps"):
        err(f"{where}: scaleMetric {pred['scaleMetric']} is not cpu, memory, concurrency or rps")
    pod = {k: v for k, v in pred.items() if k not in COMPONENT_EXT | IMPLEMENTATIONS}
    pod.setdefault("containers", [{"name": "schema-placeholder", "image": "none"}])
    validate_core({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": d["metadata"]["name"]}, "spec": pod},
                  f"{where} spec.predictor")
    model = pred.get("model")
    if model is not None:
        container = {k: v for k, v in model.items() if k not in MODEL_EXT}
        if container:
            container.setdefault("name", "kserve-container")
            validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "model"},
                           "spec": {"containers": [container]}}, f"{where} spec.predictor.model")
        if model.get("protocolVersion") != "v2":
            err(f"{where}: predictor.model.protocolVersion should be v2 (the server speaks OIP v2)")
        rt = runtimes.get(model.get("runtime"))
        if rt is None:
            err(f"{where}: runtime {model.get('runtime')} is not a ServingRuntime in kserve/")
        else:
            fmt = model["modelFormat"]["name"]
            if fmt not in {f["name"] for f in rt.get("supportedModelFormats", [])}:
                err(f"{where}: the runtime does not list model format {fmt}")
            if "v2" not in rt.get("protocolVersions", ["v2"]):
                err(f"{where}: the runtime does not list protocol v2")
if kserve_files:
    notes.append("docker/k8s/kserve/: only the embedded core/v1 parts were schema-validated; "
                 "the KServe CRD fields were checked by name, not against KServe's CRD schema")

for n in notes:
    print("note: " + n)
for e in errors:
    print("ERROR " + e)
if errors:
    sys.exit(1)
print(f"cross-references: OK ({len(objs)} objects); KServe example: "
      f"{len(runtimes)} ServingRuntime, {len(isvcs)} InferenceService, core parts OK")
PY

echo "== OK: ${#RESOURCES[@]} manifests, $passed schema checks passed (strict; Kubernetes $K8S_VERSIONS)"
