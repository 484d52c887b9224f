#!/usr/bin/env bash
# Builds what the real single-node test cluster runs (testkit::cluster), from registries only:
#   target/k8s/<K8S_VERSION>/bin/kube      one multi-call Kubernetes binary from the Go module
#                                          k8s.io/kubernetes (kube-apiserver, kube-controller-manager,
#                                          kube-scheduler, kubelet, kube-proxy, kubectl: symlinks)
#   target/k8s/<K8S_VERSION>/bin/etcd      from the Go module go.etcd.io/etcd/server/v3
#   target/k8s/<K8S_VERSION>/bin/coredns   from the Go module github.com/coredns/coredns
#   target/k8s/<K8S_VERSION>/images/*.tar  Docker-archive images built without Docker: pause (a
#                                          static C program), traffic (Debian's busybox-static),
#                                          coredns (the binary above)
# Versions: scripts/k8s/versions.env. Each piece is rebuilt only when this script, the versions
# or Go changed (a stamp beside it), so a second run takes seconds; Go's own caches (GOCACHE,
# GOMODCACHE) are shared with every other Go build on the machine.
#
# Usage: scripts/k8s/build.sh [--print-dir]   (--print-dir: print target/k8s/<version> and exit)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
# shellcheck source=versions.env
source scripts/k8s/versions.env
# shellcheck source=../lib/docker-archive.sh
source scripts/lib/docker-archive.sh

out="$root/target/k8s/$K8S_VERSION"
if [ "${1:-}" = "--print-dir" ]; then
    echo "$out"
    exit 0
fi

say() { printf '[k8s build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
    printf '[k8s build] error: %s\n' "$*" >&2
    exit 1
}

# Go may be installed without being on a non-login shell's PATH.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || fail "go is not installed (nor in /usr/local/go/bin): Go 1.26 builds the cluster; install it, then rerun"
command -v gcc >/dev/null || fail "gcc is not installed (it builds the static pause program): apt-get install gcc libc6-dev"
[ -x /bin/busybox ] || fail "/bin/busybox is missing (the traffic image is Debian's busybox-static): run scripts/setup.sh or apt-get install busybox-static"

mkdir -p "$out/bin" "$out/images" "$out/src"
work=$(mktemp -d "$out/tmp.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0
# A stamp is the recipe a piece was built from: rebuilt when the recipe changes.
recipe=$(cat scripts/k8s/build.sh scripts/lib/docker-archive.sh scripts/k8s/versions.env scripts/k8s/pause.c; go version)
recipe_hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
fresh() { [ -e "$1" ] && [ "$(cat "$1.stamp" 2>/dev/null)" = "$recipe_hash" ]; }
stamp() { echo "$recipe_hash" >"$1.stamp"; }
elapsed() { local s=$(($(date +%s) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

total_start=$(date +%s)
built=()

# === kube: the multi-call Kubernetes binary =====================================================

kube_commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

build_kube() {
    local src="$out/src/kube" minor_patch gomod staging
    mkdir -p "$src"
    say "kube $K8S_VERSION: resolving k8s.io/kubernetes and its staging modules (Go module proxy)"
    gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
    [ -f "$gomod" ] || fail "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy (go mod download); check GOPROXY and the network"
    # k8s.io/kubernetes requires every staging module at v0.0.0 and replaces it with a folder of
    # its own repository, which the module zip does not carry: replace each with its published
    # release v0.<minor>.<patch> of the same Kubernetes version.
    minor_patch=${K8S_VERSION#v1.}
    staging=$(sed -n 's/^\t\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$gomod")
    [ -n "$staging" ] || fail "found no staging modules (k8s.io/<m> v0.0.0) in $gomod: has k8s.io/kubernetes changed how it is laid out?"
    {
        echo "module intentmap.test/kube"
        echo
        grep -E '^go [0-9]' "$gomod"
        grep -E '^godebug ' "$gomod" || true
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        for m in $staging; do echo "	$m => $m v0.$minor_patch"; done
        echo ")"
    } >"$src/go.mod"
    cat >"$src/main.go" <<'EOF'
// One binary for every Kubernetes component the test cluster runs, chosen by the name it is
// called by (a symlink) or by its first argument: `kube kubelet --config ...`.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones (kube-apiserver, kube-controller-manager)

	"github.com/spf13/cobra"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, known := commands[name]; !known && name != "kubectl" {
		if len(os.Args) < 2 {
			fmt.Fprintln(os.Stderr, "usage: kube COMMAND [flags] (or call it as COMMAND through a symlink); commands: kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl")
			os.Exit(2)
		}
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	if name == "kubectl" {
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return
	}
	newCommand, known := commands[name]
	if !known {
		fmt.Fprintf(os.Stderr, "kube: unknown command %q\n", name)
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
EOF
    say "kube: go mod tidy (downloads the dependencies on a fresh machine)"
    (cd "$src" && go mod tidy) || fail "go mod tidy failed in $src (see above): the generated wrapper module does not resolve"
    local major=${K8S_VERSION#v}
    major=${major%%.*}
    local minor=${minor_patch%%.*}
    local ldflags="-s -w"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    say "kube: go build (cold on 2 cores: about 20 minutes; cached afterwards)"
    (cd "$src" && go build -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$work/kube" .) || fail "go build of the Kubernetes binary failed (see above)"
    mv "$work/kube" "$out/bin/kube"
}

start=$(date +%s)
if fresh "$out/bin/kube"; then
    say "kube $K8S_VERSION: up to date"
else
    build_kube
    stamp "$out/bin/kube"
    built+=("kube $(elapsed "$start")")
    say "kube $K8S_VERSION: built in $(elapsed "$start")"
fi
for c in "${kube_commands[@]}"; do ln -sfn kube "$out/bin/$c"; done

# === etcd =======================================================================================

build_etcd() {
    local src="$out/src/etcd"
    mkdir -p "$src"
    cat >"$src/go.mod" <<EOF
module intentmap.test/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    cat >"$src/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    say "etcd $ETCD_VERSION: go mod tidy + go build"
    (cd "$src" && go mod tidy && go build -ldflags "-s -w" -o "$work/etcd" .) || fail "building etcd $ETCD_VERSION failed (see above)"
    mv "$work/etcd" "$out/bin/etcd"
}

start=$(date +%s)
if fresh "$out/bin/etcd"; then
    say "etcd $ETCD_VERSION: up to date"
else
    build_etcd
    stamp "$out/bin/etcd"
    built+=("etcd $(elapsed "$start")")
    say "etcd $ETCD_VERSION: built in $(elapsed "$start")"
fi

# === CoreDNS, with only the plugins a cluster's DNS uses =======================================

build_coredns() {
    local src="$out/src/coredns"
    mkdir -p "$src"
    cat >"$src/go.mod" <<EOF
module intentmap.test/coredns

go 1.26.0

require github.com/coredns/coredns $COREDNS_VERSION
EOF
    cat >"$src/main.go" <<'EOF'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// In the order CoreDNS's own plugin.cfg runs them.
func init() {
	dnsserver.Directives = []string{"reload", "health", "ready", "errors", "log", "loadbalance", "cache", "kubernetes", "forward"}
}

func main() { coremain.Run() }
EOF
    say "coredns $COREDNS_VERSION: go mod tidy + go build"
    (cd "$src" && go mod tidy && go build -ldflags "-s -w" -o "$work/coredns" .) || fail "building CoreDNS $COREDNS_VERSION failed (see above)"
    mv "$work/coredns" "$out/bin/coredns"
}

start=$(date +%s)
if fresh "$out/bin/coredns"; then
    say "coredns $COREDNS_VERSION: up to date"
else
    build_coredns
    stamp "$out/bin/coredns"
    built+=("coredns $(elapsed "$start")")
    say "coredns $COREDNS_VERSION: built in $(elapsed "$start")"
fi

# === images, as Docker archives (no Docker) =====================================================

# docker_archive (scripts/lib/docker-archive.sh): one layer holding a rootfs, written
# reproducibly (sorted, mtime 0, root-owned) so the same inputs give the same image id.

build_images() {
    local rootfs="$work/rootfs"
    say "images: pause (gcc -static), traffic (busybox-static), coredns"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    gcc -static -Os -Wall -Werror -o "$rootfs/pause" scripts/k8s/pause.c || fail "compiling the pause program failed: gcc -static needs libc6-dev"
    strip "$rootfs/pause"
    docker_archive --scratch "$work" --created-by scripts/k8s/build.sh "$PAUSE_IMAGE" "$rootfs" "$out/images/pause.tar" /pause

    rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    docker_archive --scratch "$work" --created-by scripts/k8s/build.sh "$TRAFFIC_IMAGE" "$rootfs" "$out/images/traffic.tar" /bin/sh

    rm -rf "$rootfs" && mkdir -p "$rootfs/etc"
    cp "$out/bin/coredns" "$rootfs/coredns"
    docker_archive --scratch "$work" --created-by scripts/k8s/build.sh "$COREDNS_IMAGE" "$rootfs" "$out/images/coredns.tar" /coredns
}

start=$(date +%s)
if fresh "$out/images/coredns.tar" && fresh "$out/bin/coredns"; then
    say "images: up to date"
else
    build_images
    stamp "$out/images/coredns.tar"
    built+=("images $(elapsed "$start")")
fi

if [ ${#built[@]} -eq 0 ]; then
    say "all up to date in $out ($(elapsed "$total_start"))"
else
    say "built ${built[*]}; total $(elapsed "$total_start"); in $out"
fi
