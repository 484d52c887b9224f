#!/usr/bin/env bash
# kafka-image.sh VERSION: an image of Apache Kafka VERSION for the real test cluster, without
# Docker: this machine's Java runtime (its files and exactly the shared libraries it loads),
# Kafka's jars from Maven Central (scripts/kafka.sh), and busybox for a shell. Written to
# target/images/kafka-VERSION.tar as intentmap.test/kafka:VERSION (`ctr images import` or
# `docker load` take it); the broker and the console clients run from it with
# `java -cp '/opt/kafka/libs/*' ...`. Rebuilt only when the jars or the Java runtime are newer.
# Prints the archive's path on stdout; progress goes to stderr.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 VERSION   (e.g. 4.1.1)" >&2
    exit 2
fi
version=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/docker-archive.sh
source "$root/scripts/lib/docker-archive.sh"
say() { echo "[kafka image $(date +%H:%M:%S)] $*" >&2; }

libs=$(bash "$root/scripts/kafka.sh" "$version")
java=$(readlink -f "$(command -v java)")
jre=$(dirname "$(dirname "$java")")
[ -d "$jre/lib" ] || { echo "kafka-image.sh: no Java runtime at $jre (from $java)" >&2; exit 1; }
out=$root/target/images/kafka-$version.tar
name=intentmap.test/kafka:$version
if [ -f "$out" ] && [ "$out" -nt "$libs/.complete" ] && [ "$out" -nt "$java" ]; then
    say "up to date: $out"
    echo "$out"
    exit 0
fi

say "building $name from $jre and $libs..."
work=$(mktemp -d "$root/target/kafka-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/opt/kafka" "$rootfs/opt"
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
# The runtime with its links resolved (Debian's points into /etc/java-17-openjdk), without what
# a broker never loads.
cp -r "$jre" "$rootfs/opt/java"
find "$rootfs/opt/java" -type l | while read -r link; do
    target=$(readlink -f "$link" || true)
    rm -f "$link"
    if [ -n "$target" ] && [ -e "$target" ]; then cp -rL "$target" "$link"; fi
done
rm -rf "$rootfs/opt/java/jmods" "$rootfs/opt/java/include" "$rootfs/opt/java/man" \
    "$rootfs/opt/java/lib/src.zip" "$rootfs/opt/java/demo"
cp -r "$libs" "$rootfs/opt/kafka/libs"
rm -f "$rootfs/opt/kafka/libs/.complete"
# Exactly the shared libraries the runtime loads, and the loader.
find "$rootfs/opt/java" -name '*.so' -o -path '*/bin/java' | while read -r object; do
    ldd "$object" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
    [ -e "$lib" ] || continue
    case $lib in "$rootfs"*) continue ;; esac
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
docker_archive --scratch "$work" --created-by scripts/kafka-image.sh \
    --env PATH=/opt/java/bin:/bin --env JAVA_HOME=/opt/java \
    "$name" "$rootfs" "$out" /bin/sh
say "done: $out ($(du -h "$out" | cut -f1))"
echo "$out"
