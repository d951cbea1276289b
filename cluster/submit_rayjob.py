"""Create a RayJob from a template through the Kubernetes API: the scheduled-mapping fallback for KubeRay < 1.6.

    python /app/cluster/submit_rayjob.py --template /templates/rayjob.yaml --keep 7

Run by the CronJob of cluster/kuberay/cronjob-map-region.yaml, in the project's own image, with the pod's
service account (it needs list/create/delete on rayjobs.ray.io in its namespace). It

1. lists the RayJobs carrying the template's labels and, while one of them has not finished
   (status.jobDeploymentStatus not Complete/Failed/Suspended), skips this run: no overlapping mappings;
2. creates the RayJob (``metadata.generateName`` gives each run its own name);
3. deletes the oldest finished ones beyond ``--keep`` (their Ray clusters are already gone).

Only the standard library: no kubectl, no kubernetes client. Exit 0 when created or skipped, 1 on an
API error.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FINISHED = {"Complete", "Failed"}
NOT_RUNNING = FINISHED | {"Suspended"}


class Api:
    """The few calls needed, against the API server the pod's service account can reach."""

    def __init__(self, server: str, token: str, ca_file: str | None):
        self.server = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.context = ssl.create_default_context(cafile=ca_file) if server.startswith("https") else None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")


def rayjobs_path(namespace: str, name: str = "") -> str:
    return f"/apis/ray.io/v1/namespaces/{namespace}/rayjobs" + (f"/{name}" if name else "")


def submit(api: Api, template: dict, namespace: str, keep: int, log=print) -> str | None:
    """Create the RayJob unless one of its kind is still running; prune old finished ones. Returns the name."""
    labels = template.get("metadata", {}).get("labels") or {}
    if not labels:
        raise ValueError("the RayJob template needs metadata.labels (they select its earlier runs)")
    selector = urllib.parse.quote(",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    items = api.call("GET", f"{rayjobs_path(namespace)}?labelSelector={selector}").get("items", [])

    def state(job: dict) -> str:
        return (job.get("status") or {}).get("jobDeploymentStatus", "")

    running = [j["metadata"]["name"] for j in items if state(j) not in NOT_RUNNING]
    if running:
        log(f"submit_rayjob: {', '.join(running)} not finished yet: skipping this run")
        return None
    body = {**template, "metadata": {**template["metadata"], "namespace": namespace}}
    created = api.call("POST", rayjobs_path(namespace), body)
    name = created["metadata"]["name"]
    log(f"submit_rayjob: created RayJob {namespace}/{name}")
    finished = sorted((j for j in items if state(j) in FINISHED), key=lambda j: j["metadata"].get("creationTimestamp", ""))
    excess = len(items) + 1 - keep  # the new one counts
    for job in finished[:max(0, excess)]:
        api.call("DELETE", rayjobs_path(namespace, job["metadata"]["name"]))
        log(f"submit_rayjob: deleted old RayJob {job['metadata']['name']}")
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--template", required=True, type=Path, help="RayJob manifest (YAML) to create")
    p.add_argument("--keep", type=int, default=7, help="RayJobs of this template to keep, the new one included")
    p.add_argument("--namespace", help="default: the template's, else the pod's own namespace")
    p.add_argument("--api-server", help="default: the in-cluster API server")
    p.add_argument("--token-file", type=Path, default=SA_DIR / "token")
    p.add_argument("--ca-file", type=Path, default=SA_DIR / "ca.crt")
    args = p.parse_args(argv)

    template = yaml.safe_load(args.template.read_text())
    if not isinstance(template, dict) or template.get("kind") != "RayJob":
        print(f"submit_rayjob: {args.template} is not a RayJob manifest", file=sys.stderr)
        return 1
    namespace = args.namespace or template.get("metadata", {}).get("namespace")
    if not namespace:
        namespace = (SA_DIR / "namespace").read_text().strip()
    server = args.api_server or "https://{}:{}".format(os.environ["KUBERNETES_SERVICE_HOST"],
                                                      os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
    api = Api(server, args.token_file.read_text().strip(), str(args.ca_file) if server.startswith("https") else None)
    try:
        submit(api, template, namespace, max(1, args.keep))
    except urllib.error.HTTPError as exc:
        print(f"submit_rayjob: {exc.code} {exc.reason} from the API server: {exc.read().decode(errors='replace')[:500]}",
              file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"submit_rayjob: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
