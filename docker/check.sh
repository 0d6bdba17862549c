#!/usr/bin/env bash
# Checks the Docker setup as far as a machine without a Docker engine can
# (`just docker-check`; the test `docker::the_compose_file_passes_docker_check`
# runs it too). No image is built and nothing is started:
#   1. docker/compose.yml keeps the promises the README makes (Python, on the
#      YAML itself): chatd built from the repository root with docker/Dockerfile,
#      API_HOST=0.0.0.0 and REDIS_HOST=redis pinned, Redis healthy first,
#      stop_grace_period >= the SHUTDOWN_TIMEOUT of .env.example, the paths it
#      names exist.
#   2. `docker-compose config` validates it, with and without the replicas
#      profile, and as the README's quick start finds it: from the root, with
#      .env copied from .env.example and no -f.
# Debian's docker-compose 1.29 predates two Compose v2 keys this file uses: the
# top-level `name` and env_file's `{path, required: false}` form. For it the
# file is rewritten without them (name dropped; a non-required env file kept
# as a plain path when it exists, dropped when not, which is what v2 does).
# A Compose v2 docker-compose validates the file as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker-compose >/dev/null || { echo "docker-check: docker-compose is not installed" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "docker-check: $(docker-compose version --short 2>/dev/null || docker-compose version | head -1)"
python3 - "$scratch" <<'PY'
import os, re, sys, yaml

scratch = sys.argv[1]
root = os.getcwd()
here = os.path.join(root, "docker")
with open("docker/compose.yml") as f:
    doc = yaml.safe_load(f)
problems = []

def expect(ok, what):
    if not ok:
        problems.append(what)

def seconds(duration):
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(duration))
    return sum(float(n) * units[u] for n, u in parts)

def env_example(var):
    with open(".env.example") as f:
        for line in f:
            if line.strip().startswith(var + "="):
                return line.split("=", 1)[1].strip()
    return None

services = doc.get("services", {})
expect("redis" in services and "healthcheck" in services["redis"], "redis has a healthcheck")
timeout = float(env_example("SHUTDOWN_TIMEOUT") or 1800)
expect(env_example("COMPOSE_FILE") == "docker/compose.yml", ".env.example sets COMPOSE_FILE=docker/compose.yml")
for name in ("chatd", "chatd-a", "chatd-b"):
    s = services.get(name, {})
    build = s.get("build", {})
    expect(os.path.realpath(os.path.join(here, build.get("context", "?"))) == root,
           f"{name}: build context is the repository root")
    expect(os.path.isfile(os.path.join(root, build.get("dockerfile", "?"))),
           f"{name}: the dockerfile exists")
    env = s.get("environment", {})
    expect(env.get("API_HOST") == "0.0.0.0", f"{name}: API_HOST=0.0.0.0")
    expect(env.get("REDIS_HOST") == "redis", f"{name}: REDIS_HOST=redis")
    expect(s.get("depends_on", {}).get("redis", {}).get("condition") == "service_healthy",
           f"{name}: depends on redis being healthy")
    grace = seconds(s.get("stop_grace_period", "10s"))
    expect(grace >= timeout, f"{name}: stop_grace_period {grace:.0f}s >= SHUTDOWN_TIMEOUT {timeout:.0f}s")
expect(services.get("chatd", {}).get("ports") == ["${API_PORT:-8000}:8000"], "chatd publishes port 8000")
for name in ("chatd-a", "chatd-b", "proxy"):
    expect(services.get(name, {}).get("profiles") == ["replicas"], f"{name}: in the replicas profile")
for volume in services.get("proxy", {}).get("volumes", []):
    source = volume.split(":")[0]
    expect(os.path.exists(os.path.join(here, source)), f"proxy: {source} exists")
if problems:
    sys.exit("docker-check: docker/compose.yml breaks these promises:\n  " + "\n  ".join(problems))

# The v1 variants (see the header of check.sh): as this checkout is, and as
# the quick start leaves it, with a root .env.
doc.pop("name", None)

def v1_variant(exists):
    import copy
    variant = copy.deepcopy(doc)
    for s in variant["services"].values():
        kept = [e if isinstance(e, str) else e["path"] for e in s.get("env_file", [])
                if isinstance(e, str) or e.get("required", True) or exists(e["path"])]
        s.pop("env_file", None)
        if kept:
            s["env_file"] = kept
    return variant

for file_name, exists in [("compose.v1.yml", lambda p: os.path.exists(os.path.join(here, p))),
                          ("compose.v1-with-env.yml", lambda p: True)]:
    with open(os.path.join(scratch, file_name), "w") as f:
        yaml.safe_dump(v1_variant(exists), f, sort_keys=False)
print("docker-check: compose.yml keeps its promises (build, environment, health, grace, paths)")
PY

if docker-compose version --short 2>/dev/null | grep -q '^1\.'; then
  compose_file="$scratch/compose.v1.yml"
  quick_start_file="$scratch/compose.v1-with-env.yml"
else
  compose_file="docker/compose.yml"
  quick_start_file="docker/compose.yml"
fi
for profile in "" replicas; do
  docker-compose --project-directory docker -f "$compose_file" ${profile:+--profile "$profile"} config -q
  echo "docker-check: docker-compose config accepts it${profile:+ with --profile $profile}"
done

# The quick start: from a root holding only .env and docker/, no -f. The .env
# is .env.example plus a local REDIS_URL, to see the pinned settings win.
mkdir -p "$scratch/repo/docker"
{ cat .env.example; echo "REDIS_URL=redis://127.0.0.1:6379/0"; } > "$scratch/repo/.env"
cp docker/nginx.conf docker/Dockerfile "$scratch/repo/docker/"
cp "$quick_start_file" "$scratch/repo/docker/compose.yml"
(cd "$scratch/repo" && env -u COMPOSE_FILE docker-compose config) > "$scratch/resolved.yml"
python3 - "$scratch/repo" "$scratch/resolved.yml" <<'PY'
import os, sys, yaml

root, resolved = sys.argv[1], sys.argv[2]
chatd = yaml.safe_load(open(resolved))["services"]["chatd"]
env = chatd["environment"]
facts = {
    "the build context is the root": os.path.realpath(chatd["build"]["context"]) == os.path.realpath(root),
    ".env reaches chatd (SHUTDOWN_TIMEOUT)": env.get("SHUTDOWN_TIMEOUT") == "1800",
    "API_HOST=0.0.0.0 beats .env's 127.0.0.1": env.get("API_HOST") == "0.0.0.0",
    "REDIS_URL from .env is emptied": env.get("REDIS_URL") == "",
    "REDIS_HOST=redis": env.get("REDIS_HOST") == "redis",
    "port 8000 is published": any(str(p.get("published")) == "8000" and p.get("target") == 8000
                                  for p in chatd.get("ports", [])),
}
failed = [fact for fact, ok in facts.items() if not ok]
if failed:
    sys.exit("docker-check: the quick start config is wrong:\n  " + "\n  ".join(failed))
PY
echo "docker-check: 'cp .env.example .env && docker compose up' resolves docker/compose.yml with .env applied"
echo "docker-check: ok (no image was built and nothing was started: this checks files only)"
