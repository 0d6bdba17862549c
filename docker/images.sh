#!/usr/bin/env bash
# Makes, from Debian's packages, the images docker/Dockerfile and
# docker/compose.yml need on a machine that has a Docker engine but no
# container registry, and prints the variables that select them:
#
#   eval "$(docker/images.sh)" && cp .env.example .env && docker compose up -d
#
# Standard output is only `export NAME=value` lines; progress goes to stderr.
# Each image is made once and kept: when its tag exists the script only checks
# it (a second or so in all). FORCE=1 makes them again.
#
#   chatd-local/debian:bookworm  `debootstrap --variant=minbase bookworm`,
#                                `docker import`ed; the runtime base, in place
#                                of debian:bookworm-slim
#   chatd-local/redis:bookworm   + Debian's redis-server, in place of redis:7-alpine
#   chatd-local/nginx:bookworm   + Debian's nginx, in place of nginx:1.27-alpine
#
# No Rust image is made: the Dockerfile's `prebuilt` stage copies a chatd
# built on this machine (`CHATD_BUILD=prebuilt`, the binary at
# CHATD_BINARY, by default target/release/chatd) instead of compiling it in a
# rust:…-slim-bookworm container. This machine runs Debian bookworm, so the
# binary links against the same glibc as the runtime base. The script builds
# it with `cargo build --release --locked --bin chatd` (nothing to do when it
# is up to date); SKIP_CARGO=1 leaves that to the caller.
#
# Needs root (debootstrap), debootstrap itself (`apt-get install debootstrap`)
# and Debian's package mirror: the one apt uses here unless DEBIAN_MIRROR is set.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "images: $*" >&2; }

base=chatd-local/debian:bookworm
redis=chatd-local/redis:bookworm
nginx=chatd-local/nginx:bookworm

exists() { [ "${FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

# The mirror apt uses on this machine (deb822 or one-line sources), so the
# images come from where this machine's packages come from.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{print $2}' | grep -v -- '-security' | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -hs -E '^deb ' /etc/apt/sources.list 2>/dev/null \
    | awk '{print $2}' | grep -v -- '-security' | head -1 || true)
  echo "$uri"
}

# A Dockerfile on stdin built into image $1 (no context is needed).
build_from_stdin() {
  local tag=$1
  docker build --quiet --tag "$tag" - >/dev/null
  say "built $tag"
}

if exists "$base"; then
  say "$base is there"
else
  command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install debootstrap"; exit 1; }
  root=$(mktemp -d)
  # debootstrap mounts /proc and /sys inside the root while it works.
  cleanup() { umount "$root/proc" "$root/sys" 2>/dev/null || true; rm -rf --one-file-system "$root"; }
  trap cleanup EXIT
  mirror=$(debian_mirror)
  say "debootstrap bookworm into $root${mirror:+ from $mirror} (a few minutes)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$root" ${mirror:+"$mirror"} >&2
  # What a container does not need, and what makes an image differ per build.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/var/log/*.log "$root"/tmp/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  # apt inside the image uses the same mirror as debootstrap did.
  [ -z "$mirror" ] || printf 'deb %s bookworm main\n' "$mirror" > "$root/etc/apt/sources.list"
  tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$base" >/dev/null
  cleanup
  trap - EXIT
  say "imported $base"
fi

# Redis as the official image runs it: in the foreground, on every interface
# of the container, without protected mode (no password inside the compose
# network), with its data in /data.
if exists "$redis"; then
  say "$redis is there"
else
  build_from_stdin "$redis" <<EOF
FROM $base
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--bind", "0.0.0.0"]
EOF
fi

# nginx as the official image runs it: in the foreground, the site in
# /etc/nginx/conf.d/ (compose mounts docker/nginx.conf there), logs to the
# container's output, stopped gracefully by SIGQUIT.
if exists "$nginx"; then
  say "$nginx is there"
else
  build_from_stdin "$nginx" <<EOF
FROM $base
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx \\
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \\
    && ln -sf /dev/stdout /var/log/nginx/access.log \\
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
fi

if [ "${SKIP_CARGO:-0}" != 1 ]; then
  say "cargo build --release --locked --bin chatd"
  cargo build --release --locked --bin chatd >&2
fi

cat <<EOF
export CHATD_BUILD=prebuilt
export CHATD_RUNTIME_IMAGE=$base
export REDIS_IMAGE=$redis
export NGINX_IMAGE=$nginx
EOF
