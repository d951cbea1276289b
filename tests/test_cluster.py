"""cluster/: the launcher config passes Ray's own validation, the KubeRay manifests use only fields their
CRDs define (a hand-written schema below, from KubeRay 1.6's CRDs and API reference), the copies of the
cluster spec and runtime_env agree, the helpers work, and `ray job submit` runs jobs/adapt.py end to end
on a head started here (loopback only, token auth on, stopped by its own process session)."""

from __future__ import annotations

import copy
import datetime as dt
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests() -> dict[str, list[dict]]:
    return {p.name: _docs(p) for p in sorted(KUBERAY.glob("*.yaml"))}


def _by_kind(kind: str) -> list[tuple[str, dict]]:
    return [(name, d) for name, docs in _manifests().items() for d in docs if d.get("kind") == kind]


def _one(kind: str) -> dict:
    found = _by_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {[n for n, _ in found]}"
    return found[0][1]


def _fallback_rayjob() -> dict:
    """The RayJob the plain CronJob creates (kept in a ConfigMap)."""
    (cm,) = [d for _, d in _by_kind("ConfigMap") if "rayjob.yaml" in d.get("data", {})]
    return yaml.safe_load(cm["data"]["rayjob.yaml"])


def _rayjob_specs() -> dict[str, dict]:
    """Every RayJob spec the manifests define: the adapt RayJob, the RayCronJob's template, the fallback's."""
    return {"rayjob-adapt": _one("RayJob")["spec"], "raycronjob": _one("RayCronJob")["spec"]["jobTemplate"],
            "cronjob-fallback": _fallback_rayjob()["spec"]}


# ---------------------------------------------------------------------------------------------------
# every YAML parses


def test_every_yaml_under_cluster_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert {p.relative_to(CLUSTER).as_posix() for p in files} >= {
        "runtime_env.yaml", "launcher-aws.yaml", "configs/dubai-bright-to-sensor.yaml", "kuberay/raycluster.yaml",
        "kuberay/rayjob-adapt.yaml", "kuberay/raycronjob-map-region.yaml", "kuberay/cronjob-map-region.yaml",
        "kuberay/namespace-and-storage.yaml"}
    for path in files:
        docs = _docs(path)
        assert docs and all(isinstance(d, dict) for d in docs), path
    # the YAML embedded as strings parses too
    for spec in _rayjob_specs().values():
        assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)


# ---------------------------------------------------------------------------------------------------
# the cluster launcher config, through Ray's own prepare_config + validate_config (no cloud calls)


def _prepared_launcher() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "launcher-aws.yaml").read_text())
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def test_launcher_config_passes_rays_validation():
    import ray

    config = _prepared_launcher()
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and all("--num-cpus=0" in c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert head["node_config"]["InstanceType"].startswith(("m", "c", "r"))  # a CPU head
    assert head["max_workers"] == 0
    (gpu_name,) = [n for n in types if n != config["head_node_type"]]
    gpu = types[gpu_name]
    assert re.match(r"(g\d|p\d)", gpu["node_config"]["InstanceType"]), "GPU worker type"
    assert gpu["min_workers"] == 0 and 1 <= gpu["max_workers"] <= config["max_workers"]
    # Ray and Python of the containers = this project's (Ray 2.60, Python 3.11)
    docker = config["docker"]
    for image in (docker["head_image"], docker["worker_image"]):
        assert f":{ray.__version__}-py311-" in image
    assert docker["worker_image"].endswith("-gpu")
    # the project is shipped and installed on every node; torch pinned as in pyproject, CPU build on the head
    assert config["file_mounts"]["~/semi2i"] == "."
    assert ".gitignore" in config["rsync_filter"]
    pin = re.search(r'"(torch==[^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert any(pin in c and "whl/cpu" in c for c in config["head_setup_commands"])
    for cmds in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert any("pip install" in c and "-e ~/semi2i" in c for c in cmds)
    # token auth on every node, the token file shipped to every node; shared storage mounted
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert any("RAY_AUTH_MODE=token" in c and "ray start" in c for c in cmds)
    assert any("/shared" in c and "mount" in c for c in config["initialization_commands"])
    assert "-v /shared:/shared" in docker["run_options"]


def test_launcher_validation_bites_on_a_typo():
    """The check above is worth something: Ray's schema refuses an unknown key."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "launcher-aws.yaml").read_text())
    raw["available_node_types"]["ray.worker.gpu"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(raw))


# ---------------------------------------------------------------------------------------------------
# KubeRay manifests against the fields their CRDs define
#
# Hand-written from KubeRay 1.6's CRDs (ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,
# raycronjobs}.yaml) and its API reference; for the pod templates, the core/v1 fields. A schema node is
# {"fields": {name: child or None}, "required": set, "enum": {name: set}, "strmap": set of fields that
# are map[string]string}; a child in a 1-element list applies to every item of a list.

META = {"fields": dict.fromkeys(["name", "namespace", "generateName", "labels", "annotations", "finalizers",
                                 "ownerReferences"]), "strmap": {"labels", "annotations"}}
RESOURCES = {"fields": dict.fromkeys(["limits", "requests", "claims"])}
VOLUME_MOUNT = {"fields": dict.fromkeys(["name", "mountPath", "readOnly", "subPath", "subPathExpr", "mountPropagation",
                                         "recursiveReadOnly"]), "required": {"name", "mountPath"}}
PORT = {"fields": dict.fromkeys(["containerPort", "name", "protocol", "hostIP", "hostPort"]), "required": {"containerPort"}}
CONTAINER = {"fields": {**dict.fromkeys(["name", "image", "command", "args", "env", "envFrom", "imagePullPolicy",
                                         "lifecycle", "livenessProbe", "readinessProbe", "startupProbe", "resizePolicy",
                                         "restartPolicy", "securityContext", "stdin", "stdinOnce", "terminationMessagePath",
                                         "terminationMessagePolicy", "tty", "volumeDevices", "workingDir"]),
                        "resources": RESOURCES, "volumeMounts": [VOLUME_MOUNT], "ports": [PORT]},
             "required": {"name"}}
TOLERATION = {"fields": dict.fromkeys(["key", "operator", "value", "effect", "tolerationSeconds"])}
VOLUME = {"fields": {"name": None, "persistentVolumeClaim": {"fields": dict.fromkeys(["claimName", "readOnly"]),
                                                             "required": {"claimName"}},
                     "emptyDir": {"fields": dict.fromkeys(["medium", "sizeLimit"])},
                     "configMap": {"fields": dict.fromkeys(["name", "items", "defaultMode", "optional"])},
                     **dict.fromkeys(["secret", "hostPath", "nfs", "csi", "ephemeral", "projected", "downwardAPI"])},
          "required": {"name"}}
POD_SPEC = {"fields": {**dict.fromkeys(["activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "dnsConfig",
                                        "dnsPolicy", "enableServiceLinks", "hostAliases", "hostIPC", "hostNetwork",
                                        "hostPID", "hostUsers", "hostname", "imagePullSecrets", "nodeName",
                                        "nodeSelector", "os", "overhead", "preemptionPolicy", "priority",
                                        "priorityClassName", "readinessGates", "resourceClaims", "resources",
                                        "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates",
                                        "securityContext", "serviceAccount", "serviceAccountName", "setHostnameAsFQDN",
                                        "shareProcessNamespace", "subdomain", "terminationGracePeriodSeconds",
                                        "topologySpreadConstraints", "ephemeralContainers"]),
                       "containers": [CONTAINER], "initContainers": [CONTAINER], "tolerations": [TOLERATION],
                       "volumes": [VOLUME]},
            "required": {"containers"}, "strmap": {"nodeSelector"}}
POD_TEMPLATE = {"fields": {"metadata": META, "spec": POD_SPEC}}

AUTOSCALER_OPTIONS = {"fields": {**dict.fromkeys(["env", "envFrom", "idleTimeoutSeconds", "image", "imagePullPolicy",
                                                  "securityContext", "version", "volumeMounts"]),
                                 "resources": RESOURCES, "upscalingMode": None},
                      "enum": {"upscalingMode": {"Default", "Aggressive", "Conservative"}, "version": {"v1", "v2"}}}
HEAD_GROUP = {"fields": {**dict.fromkeys(["enableIngress", "headService", "serviceType"]), "rayStartParams": None,
                         "template": POD_TEMPLATE},
              "required": {"template"}, "strmap": {"rayStartParams"}}
WORKER_GROUP = {"fields": {**dict.fromkeys(["groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts",
                                            "idleTimeoutSeconds", "scaleStrategy", "suspend"]),
                           "rayStartParams": None, "template": POD_TEMPLATE},
                "required": {"groupName", "template"}, "strmap": {"rayStartParams"}}
RAY_CLUSTER_SPEC = {"fields": {**dict.fromkeys(["enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                                                "headServiceAnnotations", "managedBy", "rayVersion", "suspend"]),
                               "authOptions": {"fields": {"mode": None}, "enum": {"mode": {"disabled", "token"}}},
                               "autoscalerOptions": AUTOSCALER_OPTIONS, "headGroupSpec": HEAD_GROUP,
                               "workerGroupSpecs": [WORKER_GROUP]},
                    "required": {"headGroupSpec"}, "strmap": {"headServiceAnnotations"}}
RAY_JOB_SPEC = {"fields": {**dict.fromkeys(["activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy",
                                            "entrypoint", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources",
                                            "jobId", "managedBy", "metadata", "runtimeEnvYAML", "schedule",
                                            "shutdownAfterJobFinishes", "submissionMode", "submitterConfig", "suspend",
                                            "ttlSecondsAfterFinished"]),
                           "rayClusterSpec": RAY_CLUSTER_SPEC, "submitterPodTemplate": POD_TEMPLATE},
                "enum": {"submissionMode": {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}},
                "strmap": {"clusterSelector", "metadata"}}
RAY_CRON_JOB_SPEC = {"fields": {"schedule": None, "suspend": None, "jobTemplate": RAY_JOB_SPEC},
                     "required": {"schedule", "jobTemplate"}}
JOB_SPEC = {"fields": {**dict.fromkeys(["activeDeadlineSeconds", "backoffLimit", "backoffLimitPerIndex", "completionMode",
                                        "completions", "managedBy", "manualSelector", "maxFailedIndexes", "parallelism",
                                        "podFailurePolicy", "podReplacementPolicy", "selector", "successPolicy",
                                        "suspend", "ttlSecondsAfterFinished"]), "template": POD_TEMPLATE},
            "required": {"template"}}
CRON_JOB_SPEC = {"fields": {**dict.fromkeys(["concurrencyPolicy", "failedJobsHistoryLimit", "schedule",
                                             "startingDeadlineSeconds", "successfulJobsHistoryLimit", "suspend",
                                             "timeZone"]),
                            "jobTemplate": {"fields": {"metadata": META, "spec": JOB_SPEC}, "required": {"spec"}}},
                 "required": {"schedule", "jobTemplate"},
                 "enum": {"concurrencyPolicy": {"Allow", "Forbid", "Replace"}}}
PVC_SPEC = {"fields": dict.fromkeys(["accessModes", "resources", "storageClassName", "volumeMode", "volumeName",
                                     "selector", "dataSource", "dataSourceRef", "volumeAttributesClassName"])}


def _top(spec: dict | None, *, api: str, required_spec: bool = True, extra: dict | None = None) -> dict:
    fields = {"apiVersion": None, "kind": None, "metadata": META, **({"spec": spec} if spec else {}), **(extra or {})}
    return {"fields": fields, "required": {"apiVersion", "kind", "metadata"} | ({"spec"} if spec and required_spec else set()),
            "api": api}


KINDS = {
    "RayCluster": _top(RAY_CLUSTER_SPEC, api="ray.io/v1"),
    "RayJob": _top(RAY_JOB_SPEC, api="ray.io/v1"),
    "RayCronJob": _top(RAY_CRON_JOB_SPEC, api="ray.io/v1"),
    "CronJob": _top(CRON_JOB_SPEC, api="batch/v1"),
    "PersistentVolumeClaim": _top(PVC_SPEC, api="v1"),
    "Namespace": _top(None, api="v1"),
    "ServiceAccount": _top(None, api="v1", extra=dict.fromkeys(["automountServiceAccountToken", "imagePullSecrets", "secrets"])),
    "ConfigMap": _top(None, api="v1", extra={"data": None, "binaryData": None, "immutable": None}),
    "Role": _top(None, api="rbac.authorization.k8s.io/v1", extra={"rules": [{"fields": dict.fromkeys(
        ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"]), "required": {"verbs"}}]}),
    "RoleBinding": _top(None, api="rbac.authorization.k8s.io/v1", extra={
        "subjects": [{"fields": dict.fromkeys(["kind", "name", "namespace", "apiGroup"]), "required": {"kind", "name"}}],
        "roleRef": {"fields": dict.fromkeys(["apiGroup", "kind", "name"]), "required": {"apiGroup", "kind", "name"}}}),
}


def check_schema(obj, schema, where: str = "") -> list[str]:
    """Every problem: unknown field, missing required field, value outside an enum, non-string map value."""
    if isinstance(schema, list):
        if not isinstance(obj, list):
            return [f"{where}: expected a list"]
        return [e for i, item in enumerate(obj) for e in check_schema(item, schema[0], f"{where}[{i}]")]
    if schema is None:
        return []
    if not isinstance(obj, dict):
        return [f"{where}: expected a mapping, got {type(obj).__name__}"]
    errors = [f"{where}.{k}: not a field of this object (known: {', '.join(sorted(schema['fields']))})"
              for k in obj if k not in schema["fields"]]
    errors += [f"{where}.{k}: required field missing" for k in sorted(schema.get("required", set()) - set(obj))]
    for key, allowed in schema.get("enum", {}).items():
        if key in obj and obj[key] not in allowed:
            errors.append(f"{where}.{key}: {obj[key]!r} is not one of {sorted(allowed)}")
    for key in schema.get("strmap", set()):
        if key in obj and obj[key] is not None:
            bad = {k: v for k, v in obj[key].items() if not isinstance(v, str)}
            if bad:
                errors.append(f"{where}.{key}: values must be strings (map[string]string), got {bad}")
    for key, child in schema["fields"].items():
        if key in obj and child is not None:
            errors += check_schema(obj[key], child, f"{where}.{key}")
    return errors


def check_manifest(doc: dict) -> list[str]:
    kind = doc.get("kind")
    if kind not in KINDS:
        return [f"kind {kind!r} has no schema in this test"]
    schema = KINDS[kind]
    errors = check_schema(doc, schema, kind)
    if doc.get("apiVersion") != schema["api"]:
        errors.append(f"{kind}: apiVersion {doc.get('apiVersion')!r}, expected {schema['api']!r}")
    return errors


def test_kuberay_manifests_use_only_fields_their_crds_define():
    manifests = _manifests()
    kinds = [d["kind"] for docs in manifests.values() for d in docs]
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "ServiceAccount", "Role", "RoleBinding",
            "PersistentVolumeClaim"} <= set(kinds)
    errors = [f"{name}: {e}" for name, docs in manifests.items() for d in docs for e in check_manifest(d)]
    errors += [f"cronjob-map-region.yaml ConfigMap rayjob.yaml: {e}" for e in check_manifest(_fallback_rayjob())]
    assert not errors, "\n".join(errors)


def test_schema_check_bites():
    """A misspelt field, a missing required one, a bad enum and an int in rayStartParams are all caught."""
    job = copy.deepcopy(_one("RayJob"))
    job["spec"]["shutdownAfterJobFinish"] = True
    job["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "on"
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-cpus": 0}
    del job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    text = "\n".join(check_manifest(job))
    for expected in ("shutdownAfterJobFinish: not a field", "authOptions.mode: 'on'", "rayStartParams: values must be strings",
                     "groupName: required field missing", "containers[0].volumeMount: not a field"):
        assert expected in text, text
    cron = copy.deepcopy(_one("RayCronJob"))
    del cron["spec"]["schedule"]
    assert any("schedule: required" in e for e in check_manifest(cron))


def test_cluster_spec_and_wiring_agree_everywhere():
    import ray

    cluster = _one("RayCluster")["spec"]
    specs = _rayjob_specs()
    for name, spec in specs.items():
        assert spec["rayClusterSpec"] == cluster, f"{name}: rayClusterSpec differs from raycluster.yaml's spec"
        assert spec["shutdownAfterJobFinishes"] is True and spec.get("clusterSelector") is None
    # the scheduled mapping: RayCronJob (KubeRay >= 1.6) and the CronJob fallback create the same RayJob
    assert specs["raycronjob"] == specs["cronjob-fallback"]
    cron, fallback = _one("RayCronJob")["spec"], _one("CronJob")["spec"]
    assert cron["schedule"] == fallback["schedule"]
    assert _fallback_rayjob()["metadata"]["generateName"].endswith("-")

    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token" and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]["template"]["spec"]
    (gpu,) = cluster["workerGroupSpecs"]
    worker = gpu["template"]["spec"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 2 and gpu["replicas"] == 0
    assert "nvidia.com/gpu" not in json.dumps(head["containers"][0]["resources"])
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # drivers only: every task on the workers
    limits = worker["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" == worker["containers"][0]["resources"]["requests"]["nvidia.com/gpu"]
    # one image everywhere (the Ray pods, the fallback's submitter), the shared PVC at /shared on every Ray pod
    images = {c["image"] for pod in (head, worker) for c in pod["containers"]}
    images |= {c["image"] for c in fallback["jobTemplate"]["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1, images
    (pvc,) = [d for _, d in _by_kind("PersistentVolumeClaim")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in (head, worker):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert claims[mounts["/shared"]] == pvc["metadata"]["name"]
    # one namespace; the fallback's service account may create RayJobs there
    namespaces = {d["metadata"].get("namespace") for docs in _manifests().values() for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {_one("Namespace")["metadata"]["name"]}
    role, binding = _one("Role"), _one("RoleBinding")
    (rule,) = role["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"] and {"create", "list"} <= set(rule["verbs"])
    sa = _one("ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] and binding["subjects"][0]["name"] == sa
    assert fallback["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"] == sa


def test_runtime_env_is_shared_and_accepted_by_ray():
    from ray.runtime_env import RuntimeEnv

    shared = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    for name, spec in _rayjob_specs().items():
        assert yaml.safe_load(spec["runtimeEnvYAML"]) == shared, f"{name}: runtimeEnvYAML differs from cluster/runtime_env.yaml"
    RuntimeEnv(**shared)  # Ray's own validation
    # nothing that installs packages per job (torch is in the image), no local working_dir in a manifest
    assert not {"pip", "uv", "conda", "working_dir", "py_modules"} & set(shared)
    assert all(isinstance(v, str) for v in shared["env_vars"].values())


def _entrypoint_argv(entrypoint: str) -> list[str]:
    # KubeRay's submitter pastes the entrypoint into a shell line: no operators, no substitutions
    assert not re.search(r"&&|\|\||[;|`]|\$\(", entrypoint), entrypoint
    return shlex.split(entrypoint)


def test_entrypoints_run_real_scripts_with_valid_arguments(tmp_path):
    adapt = _load_module(REPO / "jobs" / "adapt.py", "adapt_job")
    map_region = _load_module(REPO / "jobs" / "map_region.py", "map_region_job")
    scheduled = _load_module(CLUSTER / "scheduled_map.py", "scheduled_map")

    argv = _entrypoint_argv(_rayjob_specs()["rayjob-adapt"]["entrypoint"])
    assert argv[:2] == ["python", "/app/jobs/adapt.py"]
    args = adapt.parse_args(argv[2:])
    assert (REPO / args.config.removeprefix("/app/")).is_file() and args.run_dir.startswith("/shared/")
    assert args.gpu and args.workers >= 1

    for name in ("raycronjob", "cronjob-fallback"):
        argv = _entrypoint_argv(_rayjob_specs()[name]["entrypoint"])
        assert argv[:2] == ["python", "/app/cluster/scheduled_map.py"]
        ours, theirs = argv[2:argv.index("--")], argv[argv.index("--") + 1:]
        assert "--gpus" in ours
        cmd = scheduled.build_command(theirs, now=dt.datetime(2031, 5, 6, 23, 30, tzinfo=dt.timezone.utc))
        margs = map_region.parse_args(cmd[2:])
        assert str(margs.out) == "/shared/maps/region/2031-05-06" and str(margs.run_dir).startswith("/shared/runs/")
        assert margs.input == ["/shared/incoming/region/*.tif"] and margs.workers == int(ours[ours.index("--gpus") + 1])
    # the adapt run folder is the one the mapping reads
    assert args.run_dir == str(margs.run_dir)


def test_dockerfile_builds_the_layout_the_manifests_expect():
    import ray

    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-py311-gpu$", text, re.M)
    for folder in ("platform", "jobs", "cluster"):  # /app/jobs/*.py and /app/cluster/*.py are the entrypoints
        assert re.search(rf"^COPY .*\b{folder} /app/{folder}$", text, re.M), folder
        assert f"!{folder}/" in (CLUSTER / "Dockerfile.dockerignore").read_text()
    assert "pip install --no-cache-dir -e /app" in text


def test_cluster_config_names_the_same_files_as_the_jobs_config():
    ours = yaml.safe_load((CLUSTER / "configs" / "dubai-bright-to-sensor.yaml").read_text().replace("$SEMI2I_DATA", "../shared/data"))
    theirs = yaml.safe_load((REPO / "jobs" / "configs" / "dubai-bright-to-sensor.yaml").read_text())
    for key in ("name", "source", "target", "classes"):
        assert ours[key] == theirs[key], key
    shared = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert shared["env_vars"]["SEMI2I_DATA"].startswith("/shared/")


def test_readme_names_only_files_that_exist():
    text = (CLUSTER / "README.md").read_text()
    named = set(re.findall(r"\bcluster/[\w./-]+\.(?:yaml|py|md)\b|\bcluster/Dockerfile\b", text))
    assert len(named) >= 8
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, missing


# ---------------------------------------------------------------------------------------------------
# the helpers in cluster/


def test_scheduled_map_dates_its_output_and_stops_on_dry_run(capsys):
    scheduled = _load_module(CLUSTER / "scheduled_map.py", "scheduled_map")
    cmd = scheduled.build_command(["--out", "/m/{date}", "--input", "x/*.tif"],
                                  now=dt.datetime(2030, 1, 2, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
    assert cmd[0] == sys.executable and cmd[1].endswith("jobs/map_region.py") and Path(cmd[1]).is_file()
    assert cmd[2:] == ["--out", "/m/2030-01-03", "--input", "x/*.tif"]  # the UTC date
    assert scheduled.main(["--dry-run", "--", "--out", "/m/{date}"]) == 0
    assert "map_region.py --out /m/" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        scheduled.build_command([], now=dt.datetime.now(dt.timezone.utc))


def test_wait_for_gpus_asks_the_autoscaler_then_waits():
    wait = _load_module(CLUSTER / "wait_for_gpus.py", "wait_for_gpus")
    requests, now, seen = [], [0.0], iter([0, 0, 1, 2])

    def sleep(s):
        now[0] += s

    ok = wait.wait_for_gpus(2, 60, cluster_gpus=lambda: next(seen), request=requests.append, sleep=sleep,
                            clock=lambda: now[0], poll=5, log=lambda m: None)
    assert ok and requests == [2] and now[0] == 15
    # never enough: gives up after the timeout (with a hint), the request left in place
    now[0], msgs = 0.0, []
    assert not wait.wait_for_gpus(1, 12, cluster_gpus=lambda: 0, request=requests.append, sleep=sleep,
                                  clock=lambda: now[0], poll=5, log=msgs.append)
    assert now[0] == 12 and "maxReplicas" in msgs[-1]
    # 0 withdraws the request
    assert wait.wait_for_gpus(0, 1, cluster_gpus=lambda: 0, request=requests.append, log=lambda m: None)
    assert requests[-1] == 0


class _FakeKubeApi(BaseHTTPRequestHandler):
    """Just enough of the API server for rayjobs.ray.io (loopback only, for submit_rayjob.py)."""

    store: dict
    calls: list
    made: list  # one entry per object ever created: names and timestamps never repeat

    def log_message(self, *args):
        pass

    def _reply(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.calls.append(("GET", self.path, self.headers.get("Authorization")))
        self._reply(200, {"kind": "RayJobList", "items": list(self.store.values())})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body))
        n = len(self.made)
        self.made.append(n)
        name = body["metadata"]["generateName"] + f"x{n:03d}"
        body["metadata"] = {**body["metadata"], "name": name, "creationTimestamp": f"2030-01-{n + 1:02d}T00:00:00Z"}
        self.store[name] = body
        self._reply(201, body)

    def do_DELETE(self):
        self.calls.append(("DELETE", self.path, None))
        self.store.pop(self.path.rsplit("/", 1)[1], None)
        self._reply(200, {"status": "Success"})


def test_submit_rayjob_creates_skips_and_prunes(tmp_path):
    submit = _load_module(CLUSTER / "submit_rayjob.py", "submit_rayjob")
    template = tmp_path / "rayjob.yaml"
    template.write_text(yaml.safe_dump(_fallback_rayjob()))
    token = tmp_path / "token"
    token.write_text("sekret\n")
    store, calls = {}, []
    handler = type("Api", (_FakeKubeApi,), {"store": store, "calls": calls, "made": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        argv = ["--template", str(template), "--keep", "2", "--api-server", f"http://127.0.0.1:{server.server_port}",
                "--token-file", str(token)]
        assert submit.main(argv) == 0
        (created,) = store.values()
        assert created["metadata"]["name"].startswith("semi2i-map-region-") and created["kind"] == "RayJob"
        assert created["spec"] == _fallback_rayjob()["spec"]
        get = calls[0]
        assert get[0] == "GET" and "labelSelector=" in get[1] and get[2] == "Bearer sekret"
        assert "/apis/ray.io/v1/namespaces/semi2i/rayjobs" in get[1]
        # still running (no status yet): the next tick creates nothing
        assert submit.main(argv) == 0 and len(store) == 1
        # finished: the next ticks create again and keep only the last 2
        for _ in range(3):
            for job in store.values():
                job["status"] = {"jobDeploymentStatus": "Complete"}
            assert submit.main(argv) == 0
        assert sorted(store) == ["semi2i-map-region-x002", "semi2i-map-region-x003"]
        assert sum(1 for c in calls if c[0] == "DELETE") == 2
        # an API error is exit 1 with a message, not a traceback
        bad = ["--template", str(template), "--api-server", "http://127.0.0.1:1", "--token-file", str(token)]
        assert submit.main(bad) == 1
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------------
# inputs from object storage (semi2i.io_paths)


def test_io_paths_local_and_object_store(tmp_path):
    import fsspec
    from rasterio._path import _parse_path

    from semi2i import io_paths

    for name in ("b.tif", "a.tif", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    assert io_paths.expand(str(tmp_path / "*.tif")) == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    assert io_paths.expand([f"file://{tmp_path}/c.png"]) == [str(tmp_path / "c.png")]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        io_paths.expand(str(tmp_path / "*.jpg"))

    bucket = f"/semi2i-test-{secrets.token_hex(4)}"
    fs = fsspec.filesystem("memory")
    for name in ("s2.tif", "s1.tif", "notes.txt"):
        fs.pipe(f"{bucket}/scenes/{name}", b"x")
    fs.pipe(f"{bucket}/palette.json", b'{"classes": []}')
    try:
        urls = io_paths.expand(f"memory:/{bucket}/scenes/*.tif")
        assert [u.rsplit("/", 1)[1] for u in urls] == ["s1.tif", "s2.tif"] and all(u.startswith("memory://") for u in urls)
        assert io_paths.exists(f"memory:/{bucket}/scenes/s1.tif") and not io_paths.exists(f"memory:/{bucket}/nope.tif")
        assert io_paths.is_file(f"memory:/{bucket}/palette.json")
        assert json.loads(io_paths.read_text(f"memory:/{bucket}/palette.json")) == {"classes": []}
        with pytest.raises(FileNotFoundError, match="no object matches"):
            io_paths.expand(f"memory:/{bucket}/scenes/*.jpg")
    finally:
        fs.rm(bucket, recursive=True)

    # URLs stay strings (pathlib would eat a slash), relative local paths resolve from the base
    assert io_paths.resolve("s3://bucket/$SEMI2I_TEST_UNSET/x.tif", "/base") == "s3://bucket/$SEMI2I_TEST_UNSET/x.tif"
    assert io_paths.resolve("x/y.tif", tmp_path) == tmp_path / "x" / "y.tif"
    assert io_paths.is_url("gs://b/k") and io_paths.is_url("https://h/k") and not io_paths.is_url("/a/b")
    assert not io_paths.is_url("file:///a/b")
    # rasterio hands such URLs to GDAL's virtual file systems as they are
    assert _parse_path(io_paths.gdal_path("s3://bucket/k.tif")).as_vsi() == "/vsis3/bucket/k.tif"
    assert _parse_path(io_paths.gdal_path("https://host/k.tif")).as_vsi() == "/vsicurl/https://host/k.tif"


# ---------------------------------------------------------------------------------------------------
# end to end: `ray start --head` here, `ray job submit` jobs/adapt.py, report.json


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start_head(ray_cmd: list[str], env: dict, root: Path) -> tuple[int | None, str, str]:
    """``ray start --head`` on 127.0.0.1 with free ports, in a new session. Returns (session id or None
    if the start failed, the dashboard address, the output); a failed start's processes are stopped."""
    gcs, dash, client, agent, agent_grpc, metrics, renv, node_mgr, obj_mgr = _free_ports(9)
    start = subprocess.Popen(
        [*ray_cmd, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--metrics-export-port", str(metrics),
         "--runtime-env-agent-port", str(renv), "--node-manager-port", str(node_mgr), "--object-manager-port", str(obj_mgr),
         "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", str(300 * 1024 ** 2),
         "--temp-dir", str(root / "ray"), "--disable-usage-stats"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sid = start.pid  # a new session: every head process (and every worker it forks) belongs to it, pytest does not
    try:
        out, _ = start.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        start.kill()
        out = "ray start did not return in 180 s"
    if start.returncode == 0:
        return sid, f"http://127.0.0.1:{dash}", out
    _stop_session(sid)
    shutil.rmtree(root / "ray", ignore_errors=True)
    return None, "", out


def _session_members(sid: int) -> list[int]:
    """Live processes of one session (the head started with start_new_session=True: sid = its pid)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            pids.append(pid)
    return pids


def _stop_session(sid: int, grace: float = 15.0) -> list[int]:
    """SIGTERM every process of the session, SIGKILL what is left after ``grace``; returns survivors."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in _session_members(sid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while _session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_members(sid):
            return []
    return _session_members(sid)


def _tiny_config() -> dict:
    """tests/test_adapt.py's TINY, two methods (enough to cross every stage), every stylizer on its 32-px grid."""
    from test_adapt import TINY

    cfg = copy.deepcopy(TINY)
    cfg["methods"] = ["source_only", "semi2i"]
    grid = cfg["overrides"]["patch_size"]
    quick = yaml.safe_load((REPO / "platform" / "semi2i" / "profiles" / "quick.yaml").read_text())
    for section, values in quick.items():
        if isinstance(values, dict) and values.get("patch_size", 0) > grid:
            cfg["overrides"].setdefault(section, {}).setdefault("patch_size", grid)
    return cfg


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops its head by process session (/proc)")
def test_ray_job_submit_runs_adapt_end_to_end():
    ray_bin = Path(sys.executable).parent / "ray"
    ray_cmd = [str(ray_bin)] if ray_bin.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    # short: Ray's unix sockets live under --temp-dir (107-byte limit); removed at the end
    root = Path(tempfile.mkdtemp(prefix="s2i-", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "RAY_AUTH", "RAY_JOB", "RAY_NAMESPACE"))}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # the job's python = this venv's
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),  # token auth, token outside ~/.ray
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps --node-ip-address 127.0.0.1 (else the host's IP)
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300",  # the default 60 s is not enough on a loaded 2-core machine
    })
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(_tiny_config()))
    run_dir = root / "run"
    # Ray gives a head fixed start-up limits (30 s for the raylet to register, hard-coded in 2.60): on a
    # loaded 2-core machine a start can miss them, so a failed start is cleaned up and tried once more.
    for attempt in (1, 2):
        sid, address, out = _start_head(ray_cmd, env, root)
        startup_limit = "timed out" in out or "Failed to start the dashboard" in out
        if sid is not None or attempt == 2 or not startup_limit:
            break
    if sid is None:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"ray start --head failed:\n{out[-5000:]}")
    try:
        members = _session_members(sid)
        assert members, "the head's processes are not in the session started for it"
        assert os.getsid(0) != sid

        # without the token the dashboard refuses (token auth is really on)
        no_token = {**{k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}, "HOME": str(root / "nohome")}
        refused = subprocess.run([*ray_cmd, "job", "list", "--address", address], env=no_token, cwd=root,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0, refused.stdout[-2000:]

        submit = subprocess.run(
            [*ray_cmd, "job", "submit", "--address", address, "--submission-id", "semi2i-e2e",
             "--runtime-env", str(CLUSTER / "runtime_env.yaml"), "--working-dir", ".", "--",
             "python", "jobs/adapt.py", "--config", str(config), "--run-dir", str(run_dir)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        log = submit.stdout[-6000:] + submit.stderr[-4000:]
        assert submit.returncode == 0, log
        status = subprocess.run([*ray_cmd, "job", "status", "--address", address, "semi2i-e2e"], env=env, cwd=root,
                                capture_output=True, text=True, timeout=120)
        assert "job 'semi2i-e2e' succeeded" in (status.stdout + status.stderr).lower(), status.stdout + status.stderr

        report = json.loads((run_dir / "report.json").read_text())
        assert set(report["methods"]) == {"source_only", "semi2i"}
        assert (run_dir / "maps" / "semi2i").is_dir()
        # the uploaded working dir: the repo's code, none of the big ignored folders
        pkgs = [p for p in (root / "ray" / "session_latest" / "runtime_resources" / "working_dir_files").iterdir() if p.is_dir()]
        assert len(pkgs) == 1, pkgs
        pkg = pkgs[0]
        uploaded = {p.name for p in pkg.iterdir()}
        assert {"jobs", "platform", "cluster"} <= uploaded
        assert not uploaded & {"runs", ".venv", ".ci-venv", ".git", "data"}, uploaded
    finally:
        survivors = _stop_session(sid)
        shutil.rmtree(root, ignore_errors=True)
    assert not survivors, f"head processes still alive: {survivors}"
