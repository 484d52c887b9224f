#!/usr/bin/env bash
# kafka.sh VERSION: a real Apache Kafka (broker, KRaft/ZooKeeper, console clients, ACL tool) from
# Maven Central, as plain jars in target/kafka/VERSION/libs/ (run with `java -cp 'libs/*' ...`).
#
# Resolves org.apache.kafka:kafka_2.13:VERSION and org.apache.kafka:kafka-tools:VERSION (the
# console producer/consumer, kafka-topics and kafka-acls live there), plus the logging backend the
# version logs through: reload4j (log4j 1 API) for 3.x, log4j2 (log4j-core, log4j-slf4j2-impl)
# for 4.x. A pom is generated and `mvn dependency:copy-dependencies` copies every jar. The result
# is cached: once target/kafka/VERSION/libs/.complete exists, a run only prints the folder.
# Prints the libs folder on stdout; progress goes to stderr. Needs java (17+) and mvn:
# apt-get install openjdk-17-jre-headless maven.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 VERSION   (e.g. 4.1.1 or 3.9.1)" >&2
    exit 2
fi
version=$1
case $version in
*[!0-9A-Za-z.-]*)
    echo "kafka.sh: version '$version' is not a Kafka version (digits, dots, letters, dashes)" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=$root/target/kafka/$version
libs=$dest/libs
if [ -f "$libs/.complete" ]; then
    echo "$libs"
    exit 0
fi

for tool in java mvn; do
    if ! command -v "$tool" >/dev/null; then
        echo "kafka.sh: $tool is not installed: apt-get install openjdk-17-jre-headless maven" >&2
        exit 1
    fi
done

case $version in
4.*)
    # Kafka 4 logs through log4j2 (and reads log4j2 configuration files). Its jars ask for
    # slf4j-api 1.7, which log4j-slf4j2-impl does not bind to: slf4j-api 2 (the same API) does.
    logging='
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>'
    ;;
3.*)
    # Kafka 3 logs through slf4j 1.7 to reload4j (log4j 1 properties files).
    logging='
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>'
    ;;
*)
    echo "kafka.sh: only Kafka 3.x and 4.x are known here, not $version" >&2
    exit 2
    ;;
esac

started=$(date +%s)
echo "kafka.sh: resolving Apache Kafka $version from Maven Central into $libs (once; later runs reuse it)" >&2
mkdir -p "$dest"
work=$(mktemp -d "$dest/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.intentmap.test</groupId>
  <artifactId>kafka-$version-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version></dependency>$logging
  </dependencies>
</project>
EOF

mkdir -p "$work/libs"
if ! (cd "$work" && mvn -q -B dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1); then
    echo "kafka.sh: mvn could not resolve Kafka $version (is it served by Maven Central here?):" >&2
    grep -E 'ERROR|Could not' "$work/mvn.log" | head -20 >&2 || tail -20 "$work/mvn.log" >&2
    exit 1
fi
count=$(find "$work/libs" -name '*.jar' | wc -l)
if [ "$count" -eq 0 ]; then
    echo "kafka.sh: mvn copied no jar for Kafka $version; see its output:" >&2
    tail -20 "$work/mvn.log" >&2
    exit 1
fi
cp "$work/pom.xml" "$dest/pom.xml"
rm -rf "$libs"
mv "$work/libs" "$libs"
touch "$libs/.complete"
echo "kafka.sh: $count jars for Kafka $version in $(($(date +%s) - started)) s" >&2
echo "$libs"
