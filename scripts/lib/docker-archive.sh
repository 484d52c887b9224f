# shellcheck shell=bash
# docker_archive: writes a Docker-archive image (what `docker save` writes; `docker load` and
# `ctr images import` take it) without Docker. Sourced by scripts/k8s/build.sh (the test
# cluster's pause, traffic and coredns images) and scripts/images.sh (the product's images).
#
#   docker_archive [OPTION...] NAME ROOTFS OUT ENTRYPOINT...
#
# One layer holding ROOTFS, written reproducibly (sorted, mtime 0, root-owned, modes as they are
# in ROOTFS) so the same inputs give the same image id. NAME is the image's name:tag, OUT the
# archive written (through OUT.tmp, so a reader never sees half of one). Options:
#   --scratch DIR      a directory to work in (DIR/archive is made and left there; the caller
#                      removes DIR); default: a temporary folder beside OUT, removed afterwards
#   --created-by TEXT  the history entry's created_by (default scripts/lib/docker-archive.sh)
#   --user USER        the config's User (e.g. 65532:65532); default: none (root)
#   --env K=V          an Env entry, repeatable; default: PATH=/bin:/usr/bin:/sbin:/usr/sbin
#   --cmd ARG          a Cmd argument, repeatable; default: none
#   --expose PORT      an ExposedPorts entry (8080/tcp), repeatable; default: none
#   --workdir DIR      the WorkingDir (default /)
#   --arch ARCH        the architecture (default amd64)
# After it returns, DOCKER_ARCHIVE_ID holds the image id (sha256:<config digest>).

# A JSON list of strings from the arguments; refuses what would need escaping.
docker_archive_json_list() {
    local item list=""
    for item in "$@"; do
        case $item in
        *'"'* | *\\* | *$'\n'*)
            echo "docker_archive: \"$item\" holds a quote, backslash or newline; use plain text" >&2
            return 1
            ;;
        esac
        list+="\"$item\","
    done
    printf '%s' "${list%,}"
}

docker_archive() {
    local scratch="" created_by="scripts/lib/docker-archive.sh" user="" workdir="/" arch="amd64"
    local envs=() cmd=() ports=() own_scratch=""
    while [ $# -gt 0 ]; do
        case $1 in
        --scratch) scratch=$2 ;;
        --created-by) created_by=$2 ;;
        --user) user=$2 ;;
        --env) envs+=("$2") ;;
        --cmd) cmd+=("$2") ;;
        --expose) ports+=("$2") ;;
        --workdir) workdir=$2 ;;
        --arch) arch=$2 ;;
        --*)
            echo "docker_archive: unknown option $1" >&2
            return 1
            ;;
        *) break ;;
        esac
        shift 2
    done
    if [ $# -lt 4 ]; then
        echo "docker_archive: usage: docker_archive [OPTION...] NAME ROOTFS OUT ENTRYPOINT..." >&2
        return 1
    fi
    local name=$1 rootfs=$2 dest=$3
    shift 3
    [ ${#envs[@]} -gt 0 ] || envs=("PATH=/bin:/usr/bin:/sbin:/usr/sbin")
    if [ -z "$scratch" ]; then
        own_scratch=$(mktemp -d "$dest.scratch.XXXXXX")
        scratch=$own_scratch
    fi
    local dir="$scratch/archive" entrypoint layer_id config config_id fields port
    rm -rf "$dir"
    mkdir -p "$dir"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$dir/layer.tar" .
    layer_id=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
    # The config's fields, in a fixed order; those not asked for are left out, so an image made
    # without options is byte for byte what it always was.
    fields=""
    [ -z "$user" ] || fields+="\"User\":$(docker_archive_json_list "$user"),"
    entrypoint=$(docker_archive_json_list "$@")
    fields+="\"Entrypoint\":[$entrypoint],"
    [ ${#cmd[@]} -eq 0 ] || fields+="\"Cmd\":[$(docker_archive_json_list "${cmd[@]}")],"
    fields+="\"Env\":[$(docker_archive_json_list "${envs[@]}")],"
    if [ ${#ports[@]} -gt 0 ]; then
        fields+="\"ExposedPorts\":{"
        for port in "${ports[@]}"; do fields+="$(docker_archive_json_list "$port"):{},"; done
        fields="${fields%,}},"
    fi
    fields+="\"WorkingDir\":$(docker_archive_json_list "$workdir")"
    config="{\"architecture\":\"$arch\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",\"config\":{$fields},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$layer_id\"]},\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":$(docker_archive_json_list "$created_by")}]}"
    config_id=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
    printf '%s' "$config" >"$dir/$config_id.json"
    mkdir "$dir/$layer_id"
    mv "$dir/layer.tar" "$dir/$layer_id/layer.tar"
    printf '[{"Config":"%s.json","RepoTags":[%s],"Layers":["%s/layer.tar"]}]' "$config_id" "$(docker_archive_json_list "$name")" "$layer_id" >"$dir/manifest.json"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -cf "$dest.tmp" manifest.json "$config_id.json" "$layer_id"
    mv "$dest.tmp" "$dest"
    # DOCKER_ARCHIVE_ID is for the caller.
    # shellcheck disable=SC2034
    DOCKER_ARCHIVE_ID="sha256:$config_id"
    [ -z "$own_scratch" ] || rm -rf "$own_scratch"
}
