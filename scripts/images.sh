#!/usr/bin/env bash
# Builds the product's container images without Docker, as Docker archives (`docker load` and
# `ctr images import` take them), one per binary the charts run:
#   target/images/cluster-agent.tar  cloud-api.tar  aws-proxy.tar  intentmap.tar
# Each image holds the workspace's binary at /usr/local/bin/<name>, exactly the shared libraries
# it loads (read with `ldd`, copied to the paths it names) and the dynamic loader, a minimal
# /etc/passwd and /etc/group (nonroot, 65532, as distroless has it; root where the chart runs the
# binary as uid 0), /tmp (1777), and what the Dockerfile's comments say the binary reads at run
# time (aws-proxy: the system CA bundle; intentmap: its working directory /work). User,
# entrypoint, command, exposed ports and working directory are read from the final stage of
# images/<name>.Dockerfile, the name:tag from the charts' default values (the tag defaults to the
# chart's appVersion, as the charts' image helpers do). The same binary and libraries give the
# same image id; an image whose inputs have not changed is not rebuilt.
#
# Usage: scripts/images.sh [--profile release|debug] [--out DIR] [--force] [NAME...]
#   --profile  the cargo profile the binaries are built with (release, the default, is a long
#              build the first time: every crate of the workspace in release mode)
#   --out      where the archives go (default target/images)
#   --force    rebuild images even when their inputs have not changed
#   NAME...    some of: cluster-agent cloud-api aws-proxy intentmap (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=lib/docker-archive.sh
source scripts/lib/docker-archive.sh
umask 022

all=(cluster-agent cloud-api aws-proxy intentmap)

say() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
    printf '[images] error: %s\n' "$*" >&2
    exit 1
}

profile=release
out="$root/target/images"
force=""
names=()
while [ $# -gt 0 ]; do
    case $1 in
    --profile)
        [ $# -ge 2 ] || fail "--profile needs a value: release or debug"
        profile=$2
        shift
        ;;
    --out)
        [ $# -ge 2 ] || fail "--out needs a directory"
        out=$2
        shift
        ;;
    --force) force=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*) fail "unknown option $1 (see scripts/images.sh --help)" ;;
    *)
        case " ${all[*]} " in
        *" $1 "*) names+=("$1") ;;
        *) fail "no image named $1: the images are ${all[*]}" ;;
        esac
        ;;
    esac
    shift
done
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")
case $profile in
release) cargo_profile=(--release) ;;
debug) cargo_profile=() ;;
*) fail "unknown profile $profile: release or debug" ;;
esac
case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) fail "unsupported machine $(uname -m): the images are built for amd64 or arm64 hosts" ;;
esac
for tool in cargo ldd tar sha256sum flock; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (cargo: rustup; ldd: libc-bin; flock: util-linux)"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
# One run at a time writes into $out.
exec 9>"$out/.lock"
flock 9 || fail "could not lock $out/.lock"
work=$(mktemp -d "$out/.tmp.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- where each image's settings come from -------------------------------------------------------

# yaml_value FILE DOTTED.KEY: a scalar of a simple YAML file (block mappings, two-space indents),
# unquoted, without a trailing comment; empty when absent.
yaml_value() {
    awk -v want="$2" '
        /^[[:space:]]*(#|$)/ { next }
        {
            match($0, /^ */); depth = RLENGTH / 2
            line = substr($0, RLENGTH + 1)
            if (line !~ /^[A-Za-z0-9_.-]+:/) next
            key = line; sub(/:.*/, "", key)
            value = line; sub(/^[^:]*:[ ]*/, "", value)
            path[depth] = key
            full = path[0]; for (i = 1; i <= depth; i++) full = full "." path[i]
            if (full == want) {
                sub(/[ ]+#.*$/, "", value); gsub(/^["\x27]|["\x27]$/, "", value)
                print value; exit
            }
        }' "$1"
}

# image_name NAME: <repository>:<tag> as the charts' default values make it.
image_name() {
    local chart key repository tag
    case $1 in
    cluster-agent) chart=cluster-agent key=mapper.image ;;
    aws-proxy) chart=cluster-agent key=aws.image ;;
    cloud-api) chart=cloud-api key=image ;;
    # No chart runs the CLI: it is named beside the cluster agent's image, with its tag.
    intentmap) chart=cluster-agent key=mapper.image ;;
    esac
    repository=$(yaml_value "charts/$chart/values.yaml" "$key.repository")
    tag=$(yaml_value "charts/$chart/values.yaml" "$key.tag")
    [ -n "$repository" ] || fail "charts/$chart/values.yaml has no $key.repository"
    [ -n "$tag" ] || tag=$(yaml_value "charts/$chart/Chart.yaml" appVersion)
    [ -n "$tag" ] || fail "charts/$chart/Chart.yaml has no appVersion (the image tag's default)"
    [ "$1" != intentmap ] || repository="${repository%/*}/intentmap"
    echo "$repository:$tag"
}

# dockerfile_final NAME INSTRUCTION: the arguments of the last INSTRUCTION in the final stage
# of images/NAME.Dockerfile.
dockerfile_final() {
    awk -v want="$2" '
        /^FROM / { found = "" }
        $1 == want { found = $0; sub(/^[A-Z]+[ ]+/, "", found) }
        END { print found }' "images/$1.Dockerfile"
}

# json_words TEXT: the strings of a JSON array of plain strings, one a line.
json_words() {
    printf '%s' "$1" | grep -o '"[^"]*"' | tr -d '"'
}

# --- build ---------------------------------------------------------------------------------------

target_dir=${CARGO_TARGET_DIR:-$root/target}
bins_dir="$target_dir/$profile"
packages=()
for name in "${names[@]}"; do packages+=(-p "$name" --bin "$name"); done
say "cargo build --profile $profile of ${names[*]} (the first release build compiles the whole workspace: many minutes)"
start=$(date +%s)
cargo build "${cargo_profile[@]}" --locked "${packages[@]}" || fail "cargo build failed (see above)"
say "cargo build done in $(($(date +%s) - start)) s"

built=()
for name in "${names[@]}"; do
    binary="$bins_dir/$name"
    [ -x "$binary" ] || fail "$binary is missing after cargo build"
    image=$(image_name "$name")

    user=$(dockerfile_final "$name" USER)
    entrypoint_json=$(dockerfile_final "$name" ENTRYPOINT)
    cmd_json=$(dockerfile_final "$name" CMD)
    workdir=$(dockerfile_final "$name" WORKDIR)
    expose=$(dockerfile_final "$name" EXPOSE)
    mapfile -t entrypoint < <(json_words "$entrypoint_json")
    mapfile -t cmd < <(json_words "$cmd_json")
    [ "${entrypoint[0]:-}" = "/usr/local/bin/$name" ] || fail "images/$name.Dockerfile's final ENTRYPOINT is not [\"/usr/local/bin/$name\", ...] (the exec form); the image puts the binary there"
    [ -n "$user" ] || fail "images/$name.Dockerfile's final stage has no USER"
    options=(--arch "$arch" --created-by scripts/images.sh --user "$user" --env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for arg in "${cmd[@]}"; do options+=(--cmd "$arg"); done
    for port in $expose; do
        case $port in */*) ;; *) port="$port/tcp" ;; esac
        options+=(--expose "$port")
    done
    [ -z "$workdir" ] || options+=(--workdir "$workdir")

    # Users: the image's (nonroot), and root where the chart runs the binary as uid 0 (the node
    # agent's pod). Extra files: what the binary reads at run time that is no library.
    passwd="nonroot:x:65532:65532:nonroot:/:/sbin/nologin"
    group="nonroot:x:65532:"
    extras=()
    case $name in
    cluster-agent)
        passwd=$'root:x:0:0:root:/:/sbin/nologin\n'"$passwd"
        group=$'root:x:0:\n'"$group"
        ;;
    aws-proxy) extras=(/etc/ssl/certs/ca-certificates.crt) ;; # the webhook's --system-roots
    esac

    # The libraries, from ldd: "name => /path (address)", and the loader as "/path (address)".
    ldd_out=$(ldd "$binary" 2>&1) || ldd_out="" # a static binary: nothing to copy
    libraries=()
    while read -r line; do
        case $line in
        *"not found"*) fail "$binary needs a library this machine lacks: $line" ;;
        *"=> /"*) path=${line#*=> } ;;
        /*) path=$line ;;
        *) continue ;; # linux-vdso.so.1, "statically linked"
        esac
        libraries+=("${path%% (*}")
    done <<<"$ldd_out"
    for extra in "${extras[@]}"; do
        [ -r "$extra" ] || fail "$extra is missing ($name's image carries it): apt-get install ca-certificates"
    done

    # Rebuilt only when something that goes into it changed.
    inputs=$(
        {
            cat scripts/images.sh scripts/lib/docker-archive.sh
            printf '%s\n' "$image" "$arch" "$passwd" "$group" "${options[@]}" "${entrypoint[@]}" "${libraries[@]}" "${extras[@]}"
            sha256sum "$binary" | cut -d' ' -f1
            for file in "${libraries[@]}" "${extras[@]}"; do sha256sum "$(readlink -f "$file")" | cut -d' ' -f1; done
        } | sha256sum | cut -d' ' -f1
    )
    archive="$out/$name.tar"
    if [ -z "$force" ] && [ -e "$archive" ] && [ "$(sed -n 1p "$archive.stamp" 2>/dev/null)" = "$inputs" ]; then
        say "$name: up to date ($image, $(sed -n 2p "$archive.stamp"))"
        continue
    fi

    say "$name: packing $binary, ${#libraries[@]} libraries as $image"
    rootfs="$work/rootfs"
    rm -rf "$rootfs"
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
    chmod 0755 "$rootfs"
    chmod 1777 "$rootfs/tmp"
    install -m 0755 "$binary" "$rootfs/usr/local/bin/$name"
    for file in "${libraries[@]}" "${extras[@]}"; do
        mkdir -p "$rootfs$(dirname "$file")"
        cp -L --preserve=mode "$file" "$rootfs$file"
    done
    printf '%s\n' "$passwd" >"$rootfs/etc/passwd"
    printf '%s\n' "$group" >"$rootfs/etc/group"
    chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
    [ -z "$workdir" ] || mkdir -p "$rootfs$workdir"
    rm -f "$archive.stamp"
    docker_archive --scratch "$work" "${options[@]}" "$image" "$rootfs" "$archive" "${entrypoint[@]}"
    printf '%s\n%s\n' "$inputs" "$DOCKER_ARCHIVE_ID" >"$archive.stamp"
    rm -rf "$rootfs"
    built+=("$name")
    say "$name: built $archive ($image, $DOCKER_ARCHIVE_ID, $(du -m "$archive" | cut -f1) MB)"
done

say "done: ${#built[@]} built, $((${#names[@]} - ${#built[@]})) up to date, in $out"
